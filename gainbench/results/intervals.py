"""Intervals that cover what varies (DESIGN.md section 4b): which validation documents are scored,
and which seed trained the model.

* **Documents**: every run records, per validation document, its NLL sum and token count
  (``eval_kind`` ``ppl_doc`` rows). :class:`DocumentBootstrap` draws each domain's documents with
  replacement and applies the *same* draw to every run, stage and seed compared (a paired
  bootstrap), giving each run's loss matrix, and so any metric, per replicate.
* **Seeds**: repetitions of a configuration differ in training text drawn and initialisation; a
  handful of seeds is summarised by their mean and its Student-t standard error.

:func:`combine` adds the two variances, ``v = v_docs + v_seeds`` (plus any extra term, e.g. the
interpolation allowance of a matched comparison), and takes the Student-t quantile of the seeds'
degrees of freedom (m - 1 for m seeds; a normal quantile when one seed leaves documents as the
only source). Welch-Satterthwaite would grant more degrees of freedom once the well-measured
document term is added, and so could make an interval *narrower* for having more noise in it;
the seeds' own degrees of freedom keep it conservative. An interval
says what it covers in :attr:`Interval.covers`; when neither source can be measured (one seed of
a run without per-document rows) there is no interval, and its reason says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DOCUMENT_KIND = "ppl_doc"   # eval_kind of the per-document rows (metric nll_sum, n tokens)
N_BOOT = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    estimate: float
    lo: float = float("nan")
    hi: float = float("nan")
    covers: str = ""      # e.g. "validation documents (paired bootstrap) and 3 seeds (Student-t)"
    reason: str = ""      # why there is no interval, when lo/hi are NaN

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def excludes_zero(self) -> bool:
        return bool(self.lo > 0 or self.hi < 0)


class DocumentBootstrap:
    """Loss matrices of ``runs`` (one model and sequence: the same validation documents) under a
    paired resampling of each domain's validation documents.

    :attr:`available` is False (with :attr:`reason`) when a run lacks per-document rows (runs
    made before they were recorded) or the runs were scored on different documents."""

    def __init__(self, runs: list, n_boot: int | None = None, seed: int = 0):
        n_boot = n_boot or N_BOOT  # read here, so a caller may lower it for a quick look
        self.runs, self.n_boot = list(runs), n_boot
        self.available, self.reason = True, ""
        self._stacks = None
        if not self.runs:
            self.available, self.reason = False, "no runs"
            return
        domains = self.runs[0].domains
        if any(r.domains != domains for r in self.runs):
            self.available, self.reason = False, "the runs' domain sequences differ"
            return
        tables = [self._documents(r) for r in self.runs]
        if any(t is None for t in tables):
            self.available, self.reason = False, "runs without per-document rows"
            return
        rng = np.random.default_rng(seed)
        stages = len(domains) + 1
        loss = np.empty((n_boot, len(self.runs), stages, len(domains)))
        for j, domain in enumerate(domains):
            ids = sorted(set(tables[0].loc[domain].index.get_level_values("document")))
            sums = np.zeros((len(self.runs), stages, len(ids)))
            counts = np.zeros_like(sums)
            for r, table in enumerate(tables):
                part = table.loc[domain]
                if sorted(set(part.index.get_level_values("document"))) != ids:
                    self.available, self.reason = False, f"the runs scored different {domain} documents"
                    return
                grid = part.reindex(pd.MultiIndex.from_product([range(stages), ids],
                                                               names=["stage", "document"]))
                sums[r] = grid["value"].to_numpy().reshape(stages, len(ids))
                counts[r] = grid["n"].to_numpy().reshape(stages, len(ids))
            weights = _multinomial_weights(rng, n_boot, len(ids))
            loss[:, :, :, j] = (np.einsum("bd,rkd->brk", weights, sums)
                                / np.einsum("bd,rkd->brk", weights, counts))
        self._loss = loss

    @staticmethod
    def _documents(run) -> pd.DataFrame | None:
        rows = run.rows[run.rows["eval_kind"] == DOCUMENT_KIND]
        if rows.empty or "document" not in rows:
            return None
        stages = set(rows["stage"])
        if len(stages) != len(run.domains) + 1:
            return None
        return rows.set_index(["eval_name", "stage", "document"])[["value", "n"]].sort_index()

    def loss_matrices(self) -> np.ndarray:
        """``[n_boot, runs, T+1, T]`` resampled loss matrices (runs in the order given)."""
        return self._loss

    def replicates(self, metric) -> np.ndarray:
        """``metric`` (a function of a stack of loss matrices, gainbench.metrics) per replicate and
        run: ``[n_boot, runs]``."""
        return np.asarray(metric(self._loss))


def _multinomial_weights(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """How often each of ``n`` documents is drawn, in ``n_boot`` draws of ``n`` with replacement."""
    picks = rng.integers(0, n, size=(n_boot, n))
    weights = np.zeros((n_boot, n))
    np.add.at(weights, (np.repeat(np.arange(n_boot), n), picks.ravel()), 1.0)
    return weights


def combine(per_seed: np.ndarray, doc_replicates: np.ndarray | None = None,
            extra_variance: float = 0.0, extra: str = "", confidence: float = CONFIDENCE,
            doc_reason: str = "") -> Interval:
    """An interval for the mean of ``per_seed`` (one value per seed, e.g. a method's metric or a
    paired difference between two methods), adding the document variance of that mean
    (``doc_replicates``: the seed-mean statistic under each document resample; NaN replicates, a
    front that no longer reaches the target, are dropped) and ``extra_variance`` (named by
    ``extra`` in :attr:`Interval.covers`)."""
    from scipy import stats

    values = np.asarray(per_seed, float)
    values = values[~np.isnan(values)]
    m = len(values)
    if m == 0:
        return Interval(float("nan"), reason="no value")
    estimate = float(values.mean())
    v_seeds = values.var(ddof=1) / m if m > 1 else np.nan
    v_docs = np.nan
    if doc_replicates is not None:
        reps = np.asarray(doc_replicates, float)
        valid = reps[~np.isnan(reps)]
        if len(valid) >= 0.8 * len(reps) and len(valid) > 1:
            v_docs = valid.var(ddof=1)
        else:
            doc_reason = doc_reason or "most document resamples leave the comparison undefined"
    parts, variance, df = [], 0.0, np.inf
    if not np.isnan(v_docs):
        parts.append("validation documents (paired bootstrap)")
        variance += v_docs
    if not np.isnan(v_seeds):
        parts.append(f"{m} seeds (Student-t)")
        variance += v_seeds
    if not parts:
        reason = "one seed" + (f" and {doc_reason}" if doc_reason else "")
        return Interval(estimate, reason=reason)
    if extra_variance:
        parts.append(extra)
        variance += extra_variance
    if not np.isnan(v_seeds):  # the seeds' degrees of freedom (see the module docstring)
        df = m - 1
    half = stats.t.ppf(0.5 + confidence / 2, df) * np.sqrt(variance)
    return Interval(estimate, estimate - half, estimate + half, covers=" and ".join(parts))


def change_standard_error(before: pd.DataFrame, after: pd.DataFrame, n_boot: int | None = None,
                          seed: int = 0) -> float:
    """The noise floor of a PPL change on one domain's validation set: the standard error (PPL %)
    of the pooled change from ``before`` to ``after`` (each: per-document rows of one stage,
    ``document``, ``value`` = NLL sum, ``n`` tokens) when the documents are drawn again, the same
    draw for both stages."""
    both = before.set_index("document")[["value", "n"]].join(
        after.set_index("document")[["value", "n"]], rsuffix="_after", how="inner")
    if len(both) < 2:
        return float("nan")
    weights = _multinomial_weights(np.random.default_rng(seed), n_boot or N_BOOT, len(both))
    start = weights @ both["value"].to_numpy() / (weights @ both["n"].to_numpy())
    end = weights @ both["value_after"].to_numpy() / (weights @ both["n_after"].to_numpy())
    return float(np.std(100 * np.expm1(end - start), ddof=1))

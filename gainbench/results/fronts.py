"""Forgetting/adaptation fronts and the comparison of methods at matched in-domain gain.

A method's *front*, for one seed, is its curve of earlier-domain change (y, %, negative = better)
against in-domain gain (x = -mean in-domain dPPL%, positive = adapted) across its learning rates
(or any other swept training hyperparameter). A method run at two settings of its own options is
two methods here (``Run.front``: ``ewc (lam=100)``, ``ewc (lam=1e7)``), each with its front.
Two methods are compared at a target gain: each seed's front is interpolated linearly at the
target, strictly inside its measured range (a target at or beyond a front's last measured point
is refused, with the reason: nothing is extrapolated), and the difference is the mean over seeds
of A minus the mean over seeds of B.

Its interval (gainbench.results.intervals) covers

* the validation documents: a paired bootstrap that resamples every domain's documents once per
  replicate for every run of both methods, recomputes every point of every front and
  interpolates again (so the interpolation moves with the points);
* the seeds: whole fronts (a seed's points together), the differences paired by seed (a seed
  only one method ran is left out), by Student-t;
* the interpolation itself, as an allowance on each seed's front, averaged over the seeds as
  the value is (:func:`interpolation_allowance`): the gap between the straight segment and the
  parabola through its ends and the next point, counted as one standard deviation
  (approximate: a curvature estimate, not a bound). It is zero at a measured point, so points
  measured near the target shrink it.

When the runs recorded their documents but most resamples move a front off the target (a target
near a front's end), there is no interval, and its reason says so: one over the seeds alone
would be narrower for knowing less.

:func:`value_at` reads one method's own earlier-domain change at a target gain with the same
three sources in its interval (the seed-mean value rather than a paired difference), for the
figure of that change against the training budget.

A run that a lower learning rate of its seed beats on every axis is past the method's useful
range and is left out of the front (:func:`useful_range`).

Methods are compared only within one *budget*: runs of different ``train.tokens_per_stage`` have
different fronts (:func:`run_budget`; every front and comparison is per model and budget).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gainbench import metrics
from gainbench.results.intervals import DocumentBootstrap, Interval, combine
from gainbench.results.run_metrics import run_metrics
from gainbench.results.runs import Run, method_of, point_variant

REFERENCES = ("vs base", "vs just-trained")
# The columns that name a run's budget (run_budget): every front is read within one.
BUDGET = ("tokens/stage", "steps/stage")
# The in-domain gains (%) at which each method's own value is read when none are named.
DEFAULT_TARGETS = (2.0, 4.0, 8.0)
_REPLICATE_METRICS = {
    "gain": lambda L: -metrics.in_domain_change(L).mean(axis=-1),
    "vs base": lambda L: metrics.earlier_domain_change_vs_base(L).mean(axis=-1),
    "vs just-trained": lambda L: metrics.earlier_domain_change_vs_trained(L).mean(axis=-1),
}


def run_budget(run: Run) -> tuple[int | None, int | None]:
    """A run's training budget per stage as its config sets it: (tokens, optimiser steps), steps
    = ceil((tokens // seq_len) / batch_size) as the training loop counts them (``batch_size`` is
    the global batch, whatever the processes and micro-batches); None for what the config does
    not record (runs made before those keys were stored). A domain with its own
    ``train_tokens``, or whose text ran out, trains on other than this."""
    train = run.config.get("train") or {}
    tokens = train.get("tokens_per_stage")
    if tokens is None:
        return None, None
    seq_len, batch = train.get("seq_len"), train.get("batch_size")
    steps = -(-(int(tokens) // int(seq_len)) // int(batch)) if seq_len and batch else None
    return int(tokens), steps


def _groups(points: pd.DataFrame, keys: list[str]):
    """``points.groupby(keys)``, keeping groups whose budget is unknown (NA)."""
    return points.groupby(keys, dropna=False, sort=True)


def front_points(runs: list[Run], replicates: bool = False,
                 past_range: bool = False) -> pd.DataFrame:
    """One row per finished run: run id, model, budget (``BUDGET``), method, variant
    (``point_variant``: an eval.cells=all and a matched run of one lr are one point, the same
    numbers), lr, seed, x (gain) and both y's; with ``replicates``, also each run's values under
    the document bootstrap of the runs of its model and budget (columns ``<name> reps``, an array
    each, or None when documents cannot be resampled). The runs ``useful_range`` leaves out are
    dropped, or with ``past_range`` kept and marked in a ``past range`` column (the trade-off
    figure draws them apart)."""
    lines, finished = [], []
    for run in runs:
        m = run_metrics(run)
        if np.isnan(m["in-domain dPPL%"]):
            continue
        finished.append(run)
        lines.append({"run_id": run.run_id, "model": run.model,
                      **dict(zip(BUDGET, run_budget(run))),
                      "method": run.front, "variant": point_variant(run),
                      "lr": run.lr, "seed": run.seed,
                      "gain": -m["in-domain dPPL%"], "vs base": m["earlier dPPL% vs base"],
                      "vs just-trained": m["earlier dPPL% vs just-trained"]})
    points = pd.DataFrame(lines, columns=["run_id", "model", *BUDGET, "method", "variant", "lr",
                                          "seed", "gain", *REFERENCES])
    points = points.astype({column: "Int64" for column in BUDGET})
    if replicates:
        for name in _REPLICATE_METRICS:
            points[f"{name} reps"] = None
        for where in _groups(points, ["model", *BUDGET]).indices.values():
            boot = DocumentBootstrap([finished[i] for i in where])
            points.loc[points.index[where], "documents"] = boot.reason or "resampled"
            if boot.available:
                for name, metric in _REPLICATE_METRICS.items():
                    reps = boot.replicates(metric)
                    for column, i in enumerate(where):
                        points.at[points.index[i], f"{name} reps"] = reps[:, column]
    if past_range:
        return points.assign(**{"past range": ~points.index.isin(useful_range(points).index)})
    return useful_range(points)


def useful_range(points: pd.DataFrame) -> pd.DataFrame:
    """Each seed's front without the runs past its useful learning rates: a run that a lower
    learning rate of the same seed beats on every axis (more in-domain gain, and less
    earlier-domain change against both references) is left out. Such a run (54x GAIN that
    gained 7% and forgot 29%, above a 16x run that gained 8% and forgot 4%) would otherwise sit
    among points of its gain it has nothing to do with, and its noisy gain moves it about the
    front under every document resample. A higher rate that gains less but keeps earlier
    domains better is a trade-off, not past the range, and stays (as noise in the gain can
    make a rising front dip)."""
    keep = pd.Series(True, index=points.index)
    for _, front in _groups(points, ["model", *BUDGET, "method", "seed"]):
        for i, row in front.iterrows():
            lower = front[front["lr"] < row["lr"]]
            beaten = ((lower["gain"] > row["gain"])
                      & np.logical_and.reduce([lower[r] < row[r] for r in REFERENCES]))
            keep[i] = not beaten.any()
    return points[keep]


def _curve(x, y) -> tuple[np.ndarray, np.ndarray]:
    """The curve's points sorted by x, points with equal x averaged."""
    xs, inverse = np.unique(np.asarray(x, float), return_inverse=True)
    return xs, np.bincount(inverse, weights=np.asarray(y, float)) / np.bincount(inverse)


def interpolate(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """y at ``at`` along the piecewise-linear curve through (x, y) sorted by x; NaN unless
    ``min x < at < max x``: never extrapolated, and not read at a front's first or last point
    either, which moves with every resample of the documents."""
    if len(x) == 0 or np.isnan(at):
        return float("nan")
    xs, ys = _curve(x, y)
    return float(np.interp(at, xs, ys)) if xs[0] < at < xs[-1] else float("nan")


def interpolation_allowance(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """How far the straight segment through ``at`` may be from the curve: the gap at ``at``
    between it and the parabola through its two ends and the nearest point beyond them; with
    only two points, ``|y_right - y_left| * min(t, 1 - t)`` (``t``: where ``at`` falls in the
    segment). Zero at a measured point."""
    xs, ys = _curve(x, y)
    right = int(np.searchsorted(xs, at))
    if right == 0 or right == len(xs) or np.isclose(xs[right], at):
        return 0.0
    left = right - 1
    t = (at - xs[left]) / (xs[right] - xs[left])
    linear = ys[left] + t * (ys[right] - ys[left])
    beyond = [i for i in (left - 1, right + 1) if 0 <= i < len(xs)]
    if not beyond:
        return float(abs(ys[right] - ys[left]) * min(t, 1 - t))
    third = min(beyond, key=lambda i: abs(xs[i] - at))
    nodes = (left, right, third)
    parabola = sum(ys[i] * np.prod([(at - xs[j]) / (xs[i] - xs[j]) for j in nodes if j != i])
                   for i in nodes)
    # a straight front's gap is rounding (1e-16), not curvature: zero, so no allowance is named
    if np.isclose(parabola, linear, rtol=1e-9, atol=1e-12):
        return 0.0
    return float(abs(parabola - linear))


def overlap(x_a, x_b) -> tuple[float, float] | None:
    """The x-range both curves cover, or None when they do not overlap."""
    lo, hi = max(np.min(x_a), np.min(x_b)), min(np.max(x_a), np.max(x_b))
    return (float(lo), float(hi)) if lo <= hi else None


def _per_seed(points: pd.DataFrame, reference: str, at: float) -> tuple[dict, list]:
    """Each seed's front at ``at`` (seed -> y), and the seeds whose front does not reach it."""
    values, short = {}, []
    for seed, front in points.groupby("seed"):
        y = interpolate(front["gain"], front[reference], at)
        if np.isnan(y):
            short.append(f"seed {seed} spans {front['gain'].min():.2f} .. {front['gain'].max():.2f}%")
        values[seed] = y
    return values, short


def _replicates_at(points: pd.DataFrame, reference: str, at: float) -> np.ndarray | None:
    """The seed-mean front value at ``at`` under each document replicate (NaN where a resampled
    front no longer reaches it); None when the documents cannot be resampled."""
    if f"{reference} reps" not in points or points[f"{reference} reps"].isna().any():
        return None
    per_seed = []
    for _, front in points.groupby("seed"):
        x = np.stack(front["gain reps"].to_list(), axis=1)    # [B, points]
        y = np.stack(front[f"{reference} reps"].to_list(), axis=1)
        per_seed.append([interpolate(xb, yb, at) for xb, yb in zip(x, y)])
    return np.mean(per_seed, axis=0)


def compare_at(points_a: pd.DataFrame, points_b: pd.DataFrame, reference: str,
               at: float) -> dict:
    """y_A(at) - y_B(at), mean over seeds, with an interval over documents, seeds and the
    interpolation (module docstring); ``reason`` says why a value or interval is missing."""
    out = {"at gain": at, "A": np.nan, "B": np.nan, "A - B": np.nan, "lo": np.nan, "hi": np.nan,
           "covers": "", "reason": ""}
    if np.isnan(at):
        out["reason"] = "the fronts' gain ranges do not overlap"
        return out
    a, short_a = _per_seed(points_a, reference, at)
    b, short_b = _per_seed(points_b, reference, at)
    if short_a or short_b:
        out["reason"] = "; ".join(_unreached(name, at, short)
                                  for name, short in (("A", short_a), ("B", short_b)) if short)
        return out
    seeds = sorted(set(a) & set(b))  # paired by seed; a seed only one method ran is left out
    if not seeds:
        out["reason"] = "the two methods share no seed"
        return out
    points_a, points_b = points_a[points_a["seed"].isin(seeds)], points_b[points_b["seed"].isin(seeds)]
    out["A"], out["B"] = float(np.mean([a[s] for s in seeds])), float(np.mean([b[s] for s in seeds]))
    differences = np.array([a[s] - b[s] for s in seeds])
    reps_a, reps_b = _replicates_at(points_a, reference, at), _replicates_at(points_b, reference, at)
    interval = _interval(differences, None if reps_a is None or reps_b is None else reps_a - reps_b,
                         [points_a, points_b], reference, at)
    out.update({"A - B": out["A"] - out["B"], "lo": interval.lo, "hi": interval.hi,
                "covers": interval.covers, "reason": interval.reason})
    return out


def value_at(points: pd.DataFrame, reference: str, at: float) -> dict:
    """One method's earlier-domain change at in-domain gain ``at``: the mean over seeds of each
    seed's front read there (strictly inside its measured points), with a 95% interval over the
    validation documents (the bootstrap's replicates of that seed mean), the seeds (Student-t)
    and the interpolation allowance (each seed's, averaged), as :func:`compare_at` for
    one method instead of a difference; ``reason`` says why a value or interval is missing."""
    out = {"at gain": at, "value": np.nan, "lo": np.nan, "hi": np.nan, "covers": "", "reason": ""}
    values, short = _per_seed(points, reference, at)
    if short:
        out["reason"] = _unreached("the front", at, short)
        return out
    interval = _interval(np.array(list(values.values())), _replicates_at(points, reference, at),
                         [points], reference, at)
    out.update({"value": interval.estimate, "lo": interval.lo, "hi": interval.hi,
                "covers": interval.covers, "reason": interval.reason})
    return out


def _unreached(name: str, at: float, short: list[str]) -> str:
    return f"{name} does not reach {at:g}% ({', '.join(short)})"


def _interval(per_seed: np.ndarray, doc_replicates: np.ndarray | None, fronts: list[pd.DataFrame],
              reference: str, at: float):
    """``combine`` of a statistic read at ``at`` on ``fronts``: its per-seed values, its document
    replicates and the interpolation allowance of each front it reads."""
    allowance = sum(_seed_allowance(p, reference, at) ** 2 for p in fronts)
    interval = combine(per_seed, doc_replicates, extra_variance=allowance,
                       extra="interpolation (allowance)", doc_reason="runs without per-document rows")
    if doc_replicates is not None and not interval.covers.startswith("validation documents"):
        # the documents were recorded, but most resamples move a front off the target: an
        # interval over the seeds alone would be narrower for knowing less, so none is shown
        return Interval(interval.estimate, reason="most document resamples move a front off the "
                                                  "target (read near the end of its measured points)")
    return interval


def _seed_allowance(points: pd.DataFrame, reference: str, at: float) -> float:
    """The interpolation allowance of a seed mean: the mean over seeds of each seed's front's
    own allowance at ``at``, as the value is the mean of each seed's reading. (A front of the
    seed means per learning rate would mix seeds where each ran its own straddling rates, and
    two of its points of nearly equal gain but different seeds bend its parabola without bound.)"""
    return float(np.mean([interpolation_allowance(front["gain"], front[reference], at)
                          for _, front in points.groupby("seed")]))


def verdict(row: dict) -> str:
    if np.isnan(row["A - B"]):
        return f"no comparison: {row['reason']}"
    if np.isnan(row["lo"]):
        return f"no interval ({row['reason']})"
    if row["lo"] > 0:
        return "A changes earlier domains more (worse)"
    if row["hi"] < 0:
        return "A changes earlier domains less (better)"
    return "no clear difference: the interval includes 0 (below the noise)"


def _budgets(points: pd.DataFrame):
    """(model and budget as a dict, its points) per model and budget: nothing is compared or
    drawn across budgets."""
    keys = ["model", *BUDGET]
    for key, group in _groups(points, keys):
        yield dict(zip(keys, key)), group


def _table(lines: list[dict]) -> pd.DataFrame:
    """The lines as a frame, budgets as whole numbers (NA: not recorded)."""
    frame = pd.DataFrame(lines)
    return frame.astype({column: "Int64" for column in BUDGET}) if lines else frame


# Beyond every method against LoRA, the pairs the paper's other claims name (v2 abstract): GAIN
# matches replay-augmented LoRA and dominates EWC.
CLAIM_PAIRS = (("gain", "replay_lora"), ("gain_ffn", "replay_lora"), ("gain", "ewc"),
               ("gain_ffn", "ewc"))


def matched_comparison(runs: list[Run], reference_method: str | None = None,
                       at: float | None = None) -> pd.DataFrame:
    """Every method against ``reference_method`` at matched in-domain gain, within each model and
    budget: at ``at`` if given, else at the middle of the two fronts' common gain range. Without
    ``reference_method``: every method against lora if present (else full_ft, else the first),
    then the ``CLAIM_PAIRS`` whose two methods both ran. A reference run at two settings of its
    own options (``lora (r=4)``, ``lora (r=16)``) is two fronts, and every other method meets
    each. Both earlier-domain references; one row per model x budget x pair x reference."""
    points = front_points(runs, replicates=True)
    lines = []
    for where, per_budget in _budgets(points):
        methods = list(dict.fromkeys(per_budget["method"]))
        refs = _reference_fronts(methods, reference_method)
        pairs = [(m, ref) for ref in refs for m in methods if m not in refs]
        if reference_method is None:   # a claim's method run at two options: each is a front
            pairs += [(a, b) for claim in CLAIM_PAIRS for a in methods for b in methods
                      if (method_of(a), method_of(b)) == claim and (a, b) not in pairs]
        for a, b in pairs:
            lines += _pair_rows(where, per_budget[per_budget["method"] == a],
                                per_budget[per_budget["method"] == b], a, b, at)
    return _table(lines)


def _reference_fronts(fronts: list[str], reference_method: str | None) -> list[str]:
    """The fronts every other one is compared with: those of ``reference_method`` (a method or
    one front of it), else of lora, else of full_ft, else the first front."""
    if reference_method is not None:
        return [f for f in fronts if reference_method in (f, method_of(f))]
    for method in ("lora", "full_ft"):
        if mine := [f for f in fronts if method_of(f) == method]:
            return mine
    return fronts[:1]


def _pair_rows(where: dict, mine: pd.DataFrame, theirs: pd.DataFrame, a: str, b: str,
               at: float | None) -> list[dict]:
    common = overlap(mine["gain"], theirs["gain"])
    target = at if at is not None else (np.mean(common) if common else np.nan)
    lines = []
    for reference in REFERENCES:
        row = compare_at(mine, theirs, reference, target)
        lines.append({**where, "method A": a, "method B": b, "earlier change": reference,
                      "common gain range": "-" if common is None
                      else f"{common[0]:.2f} .. {common[1]:.2f}",
                      "points A": mine["variant"].nunique(),
                      "points B": theirs["variant"].nunique(),
                      # the seeds both ran (the comparison pairs them); a searched front has
                      # one seed at most of its learning rates
                      "seeds": len(set(mine["seed"]) & set(theirs["seed"])),
                      **row, "reading": verdict(row)})
    return lines


def matched_values(runs: list[Run], at=DEFAULT_TARGETS) -> pd.DataFrame:
    """Each method's own earlier-domain change at each in-domain gain of ``at`` (:func:`value_at`),
    per model and budget: one row per model x budget x method x reference x target, with how
    many front points (variants) and seeds it read."""
    points = front_points(runs, replicates=True)
    lines = []
    for where, per_budget in _budgets(points):
        for method, mine in per_budget.groupby("method", sort=False):
            for reference in REFERENCES:
                for target in at:
                    lines.append({**where, "method": method, "earlier change": reference,
                                  "points": mine["variant"].nunique(),
                                  "seeds": mine["seed"].nunique(),
                                  **value_at(mine, reference, float(target))})
    return _table(lines)

"""Continual-learning metrics: pure functions over the loss matrix (DESIGN.md section 4).

``L`` is a ``(T+1, T)`` array: ``L[k, j-1]`` is the pooled mean NLL per token (nats) of domain
``j``'s validation tokens after stage ``k``; row 0 is the base model, domain ``j`` is trained
at stage ``j``. Stages and domains are 1-based in the formulas below, as in the paper.
Percent changes of perplexity are computed in log space: ``100 * (exp(dL) - 1)``.
Negative loss or PPL changes are improvements.

Every function of ``L`` also takes a stack of matrices ``(..., T+1, T)``, as the document
bootstrap (gainbench.results.intervals) makes, and then returns one value per matrix.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _pct(delta_nll):
    return 100.0 * np.expm1(delta_nll)


def _checked(L, stack: bool = False) -> np.ndarray:
    L = np.asarray(L, dtype=float)
    if (L.ndim < 2 or (L.ndim > 2 and not stack)) or L.shape[-2] != L.shape[-1] + 1:
        raise ValueError(f"loss matrix must be (T+1, T){' or a stack of them' if stack else ''}, "
                         f"got {L.shape}")
    return L


def _scalar(value):
    """A plain float for one matrix, an array for a stack."""
    return float(value) if np.ndim(value) == 0 else value


def in_domain_change(L) -> np.ndarray:
    """dPPL%_in[k] = 100 * (exp(L[k][k] - L[k-1][k]) - 1), k = 1..T.

    The PPL change that stage k's training makes on its own domain; negative = adapted.
    """
    L = _checked(L, stack=True)
    k = np.arange(1, L.shape[-2])
    return _pct(L[..., k, k - 1] - L[..., k - 1, k - 1])


def earlier_domain_change_vs_base(L) -> np.ndarray:
    """dPPL%_vs_base[j] = 100 * (exp(L[T][j] - L[0][j]) - 1), j = 1..T-1.

    Final PPL of each earlier domain against the base model; negative = better than base.
    """
    L = _checked(L, stack=True)
    T = L.shape[-1]
    return _pct(L[..., T, : T - 1] - L[..., 0, : T - 1])


def earlier_domain_change_vs_trained(L) -> np.ndarray:
    """dPPL%_vs_trained[j] = 100 * (exp(L[T][j] - L[j][j]) - 1), j = 1..T-1.

    Final PPL of each earlier domain against right after it was trained; positive = forgot.
    """
    L = _checked(L, stack=True)
    T = L.shape[-1]
    j = np.arange(1, T)
    return _pct(L[..., T, j - 1] - L[..., j, j - 1])


def backward_transfer(L) -> float:
    """BWT (Lopez-Paz & Ranzato 2017), in loss: mean over j < T of (L[j][j] - L[T][j]).

    Negative = forgetting (loss rose after later stages), positive = later stages helped.
    """
    L = _checked(L, stack=True)
    T = L.shape[-1]
    j = np.arange(1, T)
    return _scalar(np.mean(L[..., j, j - 1] - L[..., T, j - 1], axis=-1))


def forward_transfer(L) -> float:
    """FWT, in loss, against the base model: mean over j > 1 of (L[0][j] - L[j-1][j]).

    Positive = the stages before j already lowered domain j's loss before it was trained.
    """
    L = _checked(L, stack=True)
    j = np.arange(2, L.shape[-1] + 1)
    return _scalar(np.mean(L[..., 0, j - 1] - L[..., j - 1, j - 1], axis=-1))


def forgetting(L) -> float:
    """Forgetting (Chaudhry et al. 2018), in loss: mean over j < T of
    (L[T][j] - min over l < T of L[l][j]), with l = 0..T-1 (the base model included).

    Positive = final loss above the best loss the domain ever had; 0 = nothing forgotten.
    """
    L = _checked(L, stack=True)
    T = L.shape[-1]
    return _scalar(np.mean(L[..., T, : T - 1] - L[..., :T, : T - 1].min(axis=-2), axis=-1))


def final_ppl_geomean(L) -> float:
    """exp(mean over j of L[T][j]): the geometric mean of the final perplexities."""
    L = _checked(L, stack=True)
    return _scalar(np.exp(L[..., -1, :].mean(axis=-1)))


def loss_matrix(rows: pd.DataFrame, domains: list[str] | None = None) -> pd.DataFrame:
    """The ``(T+1, T)`` NLL matrix of one run from its tidy rows (index: stage, columns: domains
    in sequence order)."""
    nll = rows[(rows["eval_kind"] == "ppl") & (rows["metric"] == "nll")]
    matrix = nll.pivot_table(index="stage", columns="eval_name", values="value", aggfunc="first")
    if domains is None:
        order = rows[rows["stage"] > 0].sort_values("stage")["stage_domain"].drop_duplicates()
        domains = list(order) + [d for d in matrix.columns if d not in set(order)]
    return matrix[domains]


def downstream_change(acc_base, acc_after, stderr_base, stderr_after) -> tuple[float, float]:
    """lm-eval drift of one task: (acc_after - acc_base, its standard error), as fractions.

    Positive = the adapted model answers more items correctly. The standard error treats the
    two accuracies as independent, sqrt(se_base^2 + se_after^2): both are measured on the same
    items, so this over-states the noise when the two models err on the same items (a paired
    bound would need per-item results, which lm-eval's aggregate stderr does not carry).
    """
    return float(acc_after - acc_base), float(np.hypot(stderr_base, stderr_after))


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the Student-t confidence interval, n) over repetitions (seeds).

    NaN values (a run that could not fill the cell) are left out. The half-width is NaN for
    fewer than two values: one seed has no interval, and none is invented.
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(x[0]), float("nan"), 1
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / np.sqrt(n)
    return float(x.mean()), float(half), n

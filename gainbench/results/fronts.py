"""Forgetting/adaptation fronts and the comparison of methods at matched in-domain gain.

A method's *front* is its curve of earlier-domain change (y, %, negative = better) against
in-domain gain (x = -mean in-domain dPPL%, positive = adapted) across its learning rates (or
any other swept hyperparameter), each point the mean over seeds. Two methods are compared at
the same x: each curve is interpolated linearly between its measured points, sorted by x, and
never extrapolated; where the two x-ranges do not overlap there is no comparison.

Uncertainty is a bootstrap over seeds: each replicate resamples, at every point of every curve,
that point's seeds with replacement, rebuilds both curves and interpolates again at the same x.
With three seeds per point the interval is itself rough; one seed gives none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gainbench.results.runs import Run
from gainbench.results.run_metrics import run_metrics

REFERENCES = ("vs base", "vs just-trained")


def front_points(runs: list[Run]) -> pd.DataFrame:
    """One row per finished run: model, method, variant, seed, x (gain) and both y's."""
    lines = []
    for run in runs:
        m = run_metrics(run)
        if np.isnan(m["in-domain dPPL%"]):
            continue
        lines.append({"model": run.model, "method": run.method, "variant": run.variant,
                      "lr": run.lr, "seed": run.seed,
                      "gain": -m["in-domain dPPL%"], "vs base": m["earlier dPPL% vs base"],
                      "vs just-trained": m["earlier dPPL% vs just-trained"]})
    return pd.DataFrame(lines, columns=["model", "method", "variant", "lr", "seed", "gain",
                                        *REFERENCES])


def interpolate(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """y at ``at`` along the piecewise-linear curve through (x, y) sorted by x; NaN outside
    [min x, max x] (never extrapolated). Points with equal x are averaged first."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) == 0 or not (x.min() <= at <= x.max()):
        return float("nan")
    xs, inverse = np.unique(x, return_inverse=True)
    ys = np.bincount(inverse, weights=y) / np.bincount(inverse)
    return float(np.interp(at, xs, ys))


def overlap(x_a, x_b) -> tuple[float, float] | None:
    """The x-range both curves cover, or None when they do not overlap."""
    lo, hi = max(np.min(x_a), np.min(x_b)), min(np.max(x_a), np.max(x_b))
    return (float(lo), float(hi)) if lo <= hi else None


def _by_variant(points: pd.DataFrame, reference: str) -> list[np.ndarray]:
    """Per variant (curve point), its seeds' (gain, y) as an ``[n_seeds, 2]`` array."""
    return [group[["gain", reference]].to_numpy(float) for _, group in points.groupby("variant")]


def _curve(groups: list[np.ndarray], rng: np.random.Generator | None = None):
    """The curve's points (mean over seeds); with ``rng``, over seeds drawn with replacement."""
    means = [g[rng.integers(0, len(g), len(g))].mean(axis=0) if rng is not None else g.mean(axis=0)
             for g in groups]
    means = np.array(means)
    return means[:, 0], means[:, 1]


MIN_VALID_REPLICATES = 0.8  # below this share, the fronts overlap too little to resample


def compare_at(points_a: pd.DataFrame, points_b: pd.DataFrame, reference: str, at: float,
               n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """y_A(at) - y_B(at) with a bootstrap interval over seeds.

    The bounds are NaN when any point of either curve has one seed, and when fewer than 80% of the replicates
    still reach ``at`` (resampled seeds move a curve's ends; a comparison at the very edge of
    a range is not resampled into an interval)."""
    groups_a, groups_b = _by_variant(points_a, reference), _by_variant(points_b, reference)
    a, b = interpolate(*_curve(groups_a), at), interpolate(*_curve(groups_b), at)
    out = {"at gain": at, "A": a, "B": b, "A - B": a - b, "lo": np.nan, "hi": np.nan,
           "replicates": 0}
    # every point of both curves needs >= 2 seeds: a one-seed point has no spread to resample,
    # and an interval from one side's noise alone would be too narrow
    several = min(len(g) for g in groups_a + groups_b) > 1
    if np.isnan(a - b) or not several:
        return out
    rng = np.random.default_rng(seed)
    diffs = np.array([interpolate(*_curve(groups_a, rng), at) - interpolate(*_curve(groups_b, rng), at)
                      for _ in range(n_boot)])
    diffs = diffs[~np.isnan(diffs)]  # a replicate whose curve no longer reaches `at`
    out["replicates"] = len(diffs)
    if len(diffs) >= MIN_VALID_REPLICATES * n_boot:
        tail = 100 * (1 - confidence) / 2
        out["lo"], out["hi"] = np.percentile(diffs, [tail, 100 - tail])
    return out


def verdict(row: dict) -> str:
    if np.isnan(row["A - B"]):
        return "no comparison: gain ranges do not overlap"
    if np.isnan(row["lo"]):
        return ("no interval (one seed)" if row["replicates"] == 0 else
                "no interval (the fronts barely overlap at this gain)")
    if row["lo"] > 0:
        return "A changes earlier domains more (worse)"
    if row["hi"] < 0:
        return "A changes earlier domains less (better)"
    return "no clear difference (interval includes 0)"


def matched_comparison(runs: list[Run], reference_method: str | None = None,
                       at: float | None = None, n_boot: int = 2000) -> pd.DataFrame:
    """Every method against ``reference_method`` (default: lora if present, else full_ft, else
    the first) at matched in-domain gain: at ``at`` if given, else at the middle of the two
    fronts' common gain range. Both earlier-domain references; one row per model x method x
    reference."""
    points = front_points(runs)
    lines = []
    for model, per_model in points.groupby("model"):
        methods = list(dict.fromkeys(per_model["method"]))
        ref = reference_method or next((m for m in ("lora", "full_ft") if m in methods), methods[0])
        if ref not in methods:
            continue
        ref_points = per_model[per_model["method"] == ref]
        for method in methods:
            if method == ref:
                continue
            mine = per_model[per_model["method"] == method]
            common = overlap(mine["gain"], ref_points["gain"])
            for reference in REFERENCES:
                target = at if at is not None else (np.mean(common) if common else np.nan)
                row = compare_at(mine, ref_points, reference, target, n_boot=n_boot)
                lines.append({"model": model, "method A": method, "method B": ref,
                              "earlier change": reference,
                              "common gain range": "-" if common is None
                              else f"{common[0]:.2f} .. {common[1]:.2f}",
                              "points A": mine["variant"].nunique(),
                              "points B": ref_points["variant"].nunique(),
                              "seeds": int(per_model.groupby("variant").size().min()),
                              **row, "reading": verdict(row)})
    return pd.DataFrame(lines)

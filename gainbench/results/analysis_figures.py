"""Figures of the analyses that look inside one adaptation: per-token loss changes (Figure 1),
interpolation across a stage (Figure 3) and the combination of two stages' updates (Figure 4).

Each function takes the loaded runs and returns ``(file stem, Figure)`` pairs, nothing for a run
without the analysis's rows or arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gainbench.results.plotting import diverging_cells, method_color, method_style, pct_change, pyplot
from gainbench.results.runs import Run


def _nll_rows(run: Run, kind: str):
    """The run's NLL rows of one analysis (interpolation, combination); empty if it did not run."""
    return run.rows[(run.rows["eval_kind"] == kind) & (run.rows["metric"] == "nll")]


def _per_token_changes(run: Run) -> dict[str, np.ndarray]:
    """domain -> per-token loss change (nats) between the first two saved stages."""
    if run.path is None:   # a run made in memory has no arrays
        return {}
    folder = run.path / "per_token"
    files = sorted(folder.glob("stage*_*.npy")) if folder.is_dir() else []
    by_domain: dict[str, dict[int, Path]] = {}
    for f in files:
        stage, domain = f.stem[len("stage"):].split("_", 1)
        by_domain.setdefault(domain, {})[int(stage)] = f
    changes = {}
    for domain, stages in by_domain.items():
        if len(stages) >= 2:
            first, second = sorted(stages)[:2]
            before = np.load(stages[first]).astype(np.float32)
            after = np.load(stages[second]).astype(np.float32)
            changes[domain] = (after - before).ravel()
    return changes


def per_token_histograms(runs: list[Run]):
    """Figure 1: distribution of per-token loss changes on unrelated domains, one line per run."""
    plt = pyplot()
    data = [(run, _per_token_changes(run)) for run in runs]
    data = [(run, changes) for run, changes in data if changes]
    if not data:
        return []
    domains = sorted({d for _, changes in data for d in changes})
    fig, axes = plt.subplots(1, len(domains), figsize=(4.5 * len(domains), 4), squeeze=False)
    for ax, domain in zip(axes[0], domains):
        values = [c[domain] for _, c in data if domain in c]
        limit = max(float(np.quantile(np.abs(np.concatenate(values)), 0.995)), 1e-3)
        bins = np.linspace(-limit, limit, 61)
        for run, changes in data:
            if domain in changes:
                ax.hist(changes[domain], bins=bins, histtype="step", density=True,
                        lw=method_style(run.method)["linewidth"], color=method_color(run.method),
                        label=f"{run.label} (mean {changes[domain].mean():+.3f})")
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel("per-token loss change after - before (nats)")
        ax.set_ylabel("density")
        ax.set_title(domain)
        ax.legend(fontsize=8)
    fig.suptitle("Per-token loss change on domains not trained, across one adaptation "
                 "(right of 0 = token got worse)")
    fig.tight_layout()
    return [("per_token_histograms", fig)]


def interpolation_curves(runs: list[Run]):
    """Figure 3: PPL change vs base along W0 + alpha (W1 - W0), one panel per run."""
    plt = pyplot()
    out = []
    for run in runs:
        rows = _nll_rows(run, "interpolation")
        if rows.empty:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for stage, per_stage in rows.groupby("stage"):
            trained = run.domains[int(stage) - 1]
            for domain, curve in per_stage.groupby("eval_name"):
                curve = curve.sort_values("alpha")
                at_zero = curve.loc[curve["alpha"] == 0.0, "value"]
                if at_zero.empty:
                    continue
                is_trained = domain == trained
                ax.plot(curve["alpha"], pct_change(curve["value"] - at_zero.iloc[0]), marker="o",
                        lw=2.5 if is_trained else 1, color="black" if is_trained else None,
                        label=f"{domain}{' (trained)' if is_trained else ''}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(1, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("alpha (0 = before the stage, 1 = after)")
        ax.set_ylabel("validation PPL change vs alpha = 0 (%)")
        ax.set_title(f"{run.label} on {run.model}: interpolating stage "
                     f"{', '.join(str(int(s)) for s in rows['stage'].unique())}", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        out.append((f"interpolation_{run.run_id}", fig))
    return out


def combination_grids(runs: list[Run]):
    """Figure 4: PPL change vs base over the grid a x stage A + b x stage B, for domain A,
    domain B and the mean of the other domains."""
    plt = pyplot()
    out = []
    for run in runs:
        rows = _nll_rows(run, "combination")
        if rows.empty:
            continue
        b_stage = int(rows["stage"].iloc[0])
        dom_a, dom_b = run.domains[b_stage - 2], run.domains[b_stage - 1]
        base = rows[(rows["a"] == 0) & (rows["b"] == 0)].set_index("eval_name")["value"]
        rows = rows.assign(change=pct_change(rows["value"].values - base.loc[rows["eval_name"]].values))
        others = rows[~rows["eval_name"].isin([dom_a, dom_b])].groupby(["a", "b"])["change"].mean()
        panels = {f"{dom_a} (stage A)": rows[rows["eval_name"] == dom_a].set_index(["a", "b"])["change"],
                  f"{dom_b} (stage B)": rows[rows["eval_name"] == dom_b].set_index(["a", "b"])["change"],
                  "other domains (mean)": others}
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
        for ax, (title, values) in zip(axes, panels.items()):
            grid = values.unstack("b").sort_index().sort_index(axis=1)
            image = diverging_cells(ax, grid.values, origin="lower")
            ax.set_xticks(range(grid.shape[1]), [f"{b:g}" for b in grid.columns])
            ax.set_yticks(range(grid.shape[0]), [f"{a:g}" for a in grid.index])
            ax.set_xlabel("b (scale of stage B's update)")
            ax.set_ylabel("a (scale of stage A's update)")
            ax.set_title(title)
            fig.colorbar(image, ax=ax, label="PPL change vs base (%)")
        fig.suptitle(f"{run.label} on {run.model}: combining the updates of stages "
                     f"{b_stage - 1} (A) and {b_stage} (B)")
        fig.tight_layout()
        out.append((f"combination_{run.run_id}", fig))
    return out

"""The paper's figures, drawn from run folders alone (matplotlib, no model is run).

Each ``FIGURES`` entry takes the loaded runs and returns ``(file stem, Figure)`` pairs; a
figure whose data no run has (no per-token arrays, no interpolation rows) returns nothing.
Sign convention everywhere: a change is *after - before*, so negative = lower perplexity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from gainbench.results.runs import Run
from gainbench.results.run_metrics import run_metrics

GAIN_METHODS = ("gain", "gain_ffn")


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a cluster node
    import matplotlib.pyplot as plt

    return plt


def _pct(delta_nll):
    return 100.0 * np.expm1(delta_nll)


# One colour per method in every figure (tab10 order), so a method is recognised across panels.
METHOD_ORDER = ("gain", "gain_ffn", "lora", "full_ft", "ia3", "ia3_peft", "dora", "lora_l2",
                "replay_lora", "ewc")


def _color(method: str) -> str:
    index = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER) + sum(map(ord, method))
    return f"C{index % 10}"


def _style(method: str) -> dict:
    """GAIN's variants stand out (filled stars, thick); baselines are plain circles."""
    if method in GAIN_METHODS:
        return {"marker": "*", "markersize": 14, "linewidth": 2.2, "zorder": 3, "color": _color(method)}
    return {"marker": "o", "markersize": 7, "linewidth": 1.2, "zorder": 2, "color": _color(method)}


def _diverging_cells(ax, values: np.ndarray, **imshow_kwargs):
    """Draw ``values`` (percent changes) with a diverging map centred on zero, each cell
    labelled; returns the image for a colour bar."""
    from matplotlib.colors import TwoSlopeNorm

    limit = max(float(np.nanmax(np.abs(values))), 1e-6)
    image = ax.imshow(values, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -limit, limit), **imshow_kwargs)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, f"{values[i, j]:+.1f}", ha="center", va="center", fontsize=8)
    return image


def _nll_rows(run: Run, kind: str):
    """The run's NLL rows of one analysis (interpolation, combination); empty if it did not run."""
    return run.rows[(run.rows["eval_kind"] == kind) & (run.rows["metric"] == "nll")]


def ppl_change_heatmaps(runs: list[Run]):
    """Per run: dPPL% of every domain after every stage, against the base model."""
    plt = _plt()
    out = []
    for run in runs:
        L = run.loss_matrix
        change = _pct(L.values[1:] - L.values[0])
        fig, ax = plt.subplots(figsize=(1.1 * len(run.domains) + 2.5, 0.55 * len(change) + 2.2))
        image = _diverging_cells(ax, change, aspect="auto")
        for k in range(min(change.shape[0], len(run.domains))):  # outline the domain just trained
            ax.add_patch(plt.Rectangle((k - 0.5, k - 0.5), 1, 1, fill=False, lw=2, ec="black"))
        ax.set_xticks(range(len(run.domains)), run.domains, rotation=35, ha="right")
        ax.set_yticks(range(change.shape[0]),
                      [f"{k}: {run.domains[k - 1]}" for k in L.index[1:]])
        ax.set_xlabel("evaluated domain")
        ax.set_ylabel("after training stage")
        fig.colorbar(image, ax=ax, label="validation PPL change vs base (%)")
        ax.set_title(f"{run.variant} on {run.model}, seed {run.seed}: PPL change vs base "
                     f"(blue = better; box = domain just trained)", fontsize=10)
        fig.tight_layout()
        out.append((f"heatmap_{run.run_id}", fig))
    return out


def _tradeoff_points(runs: list[Run]) -> pd.DataFrame:
    lines = []
    for run in runs:
        m = run_metrics(run)
        lines.append({"model": run.model, "method": run.method, "variant": run.variant,
                      "seed": run.seed, "gain": -m["in-domain dPPL%"],
                      "vs base": m["earlier dPPL% vs base"],
                      "vs just-trained": m["earlier dPPL% vs just-trained"]})
    return pd.DataFrame(lines).dropna()


def tradeoff_scatter(runs: list[Run]):
    """Figure 2: in-domain gain against earlier-domain change, one point per method variant
    (mean over seeds, bars = min..max over seeds), both references side by side, per model."""
    plt = _plt()
    points = _tradeoff_points(runs)
    out = []
    for model, per_model in points.groupby("model"):
        fig, axes = plt.subplots(1, 2, figsize=(12, 5))
        for ax, reference in zip(axes, ["vs base", "vs just-trained"]):
            for method, per_method in per_model.groupby("method"):
                stats = per_method.groupby("variant").agg(
                    x=("gain", "mean"), y=(reference, "mean"),
                    x0=("gain", "min"), x1=("gain", "max"), y0=(reference, "min"),
                    y1=(reference, "max")).sort_values("x")
                style = _style(method)
                ax.errorbar(stats["x"], stats["y"],
                            xerr=[stats["x"] - stats["x0"], stats["x1"] - stats["x"]],
                            yerr=[stats["y"] - stats["y0"], stats["y1"] - stats["y"]],
                            label=method, linestyle="-" if len(stats) > 1 else "none",
                            capsize=2, **style)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xlabel("in-domain gain: -(mean in-domain PPL change) (%)")
            ax.set_ylabel(f"earlier domains, final PPL change {reference} (%)")
            ax.set_title(f"earlier-domain change {reference}\n(below 0 = better than "
                         f"{'the base model' if reference == 'vs base' else 'right after training'})",
                         fontsize=10)
        axes[0].legend(title="method (stars: GAIN)")
        fig.suptitle(f"{model}: forgetting vs adaptation, one point per method and hyperparameter "
                     f"(mean over seeds, bars: seed range)")
        fig.tight_layout()
        out.append((f"tradeoff_{model}", fig))
    return out


def _per_token_changes(run: Run) -> dict[str, np.ndarray]:
    """domain -> per-token loss change (nats) between the first two saved stages."""
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
    plt = _plt()
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
                        lw=_style(run.method)["linewidth"], color=_color(run.method),
                        label=f"{run.variant} (mean {changes[domain].mean():+.3f})")
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
    plt = _plt()
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
                ax.plot(curve["alpha"], _pct(curve["value"] - at_zero.iloc[0]), marker="o",
                        lw=2.5 if is_trained else 1, color="black" if is_trained else None,
                        label=f"{domain}{' (trained)' if is_trained else ''}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(1, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("alpha (0 = before the stage, 1 = after)")
        ax.set_ylabel("validation PPL change vs alpha = 0 (%)")
        ax.set_title(f"{run.variant} on {run.model}: interpolating stage "
                     f"{', '.join(str(int(s)) for s in rows['stage'].unique())}", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        out.append((f"interpolation_{run.run_id}", fig))
    return out


def combination_grids(runs: list[Run]):
    """Figure 4: PPL change vs base over the grid a x stage A + b x stage B, for domain A,
    domain B and the mean of the other domains."""
    plt = _plt()
    out = []
    for run in runs:
        rows = _nll_rows(run, "combination")
        if rows.empty:
            continue
        b_stage = int(rows["stage"].iloc[0])
        dom_a, dom_b = run.domains[b_stage - 2], run.domains[b_stage - 1]
        base = rows[(rows["a"] == 0) & (rows["b"] == 0)].set_index("eval_name")["value"]
        rows = rows.assign(change=_pct(rows["value"].values - base.loc[rows["eval_name"]].values))
        others = rows[~rows["eval_name"].isin([dom_a, dom_b])].groupby(["a", "b"])["change"].mean()
        panels = {f"{dom_a} (stage A)": rows[rows["eval_name"] == dom_a].set_index(["a", "b"])["change"],
                  f"{dom_b} (stage B)": rows[rows["eval_name"] == dom_b].set_index(["a", "b"])["change"],
                  "other domains (mean)": others}
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
        for ax, (title, values) in zip(axes, panels.items()):
            grid = values.unstack("b").sort_index().sort_index(axis=1)
            image = _diverging_cells(ax, grid.values, origin="lower")
            ax.set_xticks(range(grid.shape[1]), [f"{b:g}" for b in grid.columns])
            ax.set_yticks(range(grid.shape[0]), [f"{a:g}" for a in grid.index])
            ax.set_xlabel("b (scale of stage B's update)")
            ax.set_ylabel("a (scale of stage A's update)")
            ax.set_title(title)
            fig.colorbar(image, ax=ax, label="PPL change vs base (%)")
        fig.suptitle(f"{run.variant} on {run.model}: combining the updates of stages "
                     f"{b_stage - 1} (A) and {b_stage} (B)")
        fig.tight_layout()
        out.append((f"combination_{run.run_id}", fig))
    return out


def downstream_per_stage(runs: list[Run]):
    """lm-eval accuracy after each stage it ran at, per task, one line per method variant
    (mean over seeds)."""
    plt = _plt()
    scores = pd.concat([r.rows[(r.rows["eval_kind"] == "lm_eval") & (r.rows["metric"] == "acc")]
                        .assign(variant=r.variant, model_name=r.model, method_name=r.method)
                        for r in runs] or [pd.DataFrame()])
    if scores.empty:
        return []
    out = []
    for model, per_model in scores.groupby("model_name"):
        tasks = sorted(per_model["eval_name"].unique())
        fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            per_task = per_model[per_model["eval_name"] == task]
            for (method, variant), curve in per_task.groupby(["method_name", "variant"]):
                mean = curve.groupby("stage")["value"].mean()
                style = _style(method)
                ax.plot(mean.index, 100 * mean.values, label=variant, marker=style["marker"],
                        lw=style["linewidth"], markersize=style["markersize"] * 0.7,
                        color=style["color"])
            ax.set_xlabel("after stage (0 = base model)")
            ax.set_ylabel("accuracy (%)")
            ax.set_title(task)
            ax.legend(fontsize=8)
        fig.suptitle(f"{model}: downstream accuracy per stage (mean over seeds)")
        fig.tight_layout()
        out.append((f"downstream_{model}", fig))
    return out


FIGURES: dict[str, Callable[[list[Run]], list]] = {
    "heatmap": ppl_change_heatmaps,
    "tradeoff": tradeoff_scatter,
    "per_token": per_token_histograms,
    "interpolation": interpolation_curves,
    "combination": combination_grids,
    "downstream": downstream_per_stage,
}


def write_figures(runs: list[Run], out_dir: Path, names=None, formats=("png", "pdf")) -> list[Path]:
    plt = _plt()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or FIGURES:
        for stem, fig in FIGURES[name](runs):
            for fmt in formats:
                path = out_dir / f"{stem}.{fmt}"
                fig.savefig(path, dpi=120, bbox_inches="tight")
                written.append(path)
            plt.close(fig)
    return written

"""The paper's figures, drawn from run folders alone (matplotlib, no model is run).

Each ``FIGURES`` entry takes the loaded runs and returns ``(file stem, Figure)`` pairs; a
figure whose data no run has (no per-token arrays, no interpolation rows) returns nothing.
Sign convention everywhere: a change is *after - before*, so negative = lower perplexity.
Here: the figures over whole runs (heatmaps, the trade-off, downstream accuracy); the analyses
inside one adaptation are in ``analysis_figures``, the shared style in ``plotting``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from gainbench.results.analysis_figures import (combination_grids, interpolation_curves,
                                                per_token_histograms)
from gainbench.results.plotting import diverging_cells, method_style, pct_change, pyplot
from gainbench.results.run_metrics import headline_metric, headline_metrics_of, run_metrics
from gainbench.results.runs import Run


def ppl_change_heatmaps(runs: list[Run]):
    """Per run: dPPL% of every domain after every stage, against the base model."""
    plt = pyplot()
    out = []
    for run in runs:
        L = run.loss_matrix
        change = pct_change(L.values[1:] - L.values[0])
        fig, ax = plt.subplots(figsize=(1.1 * len(run.domains) + 2.5, 0.55 * len(change) + 2.2))
        image = diverging_cells(ax, change, aspect="auto")
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
    plt = pyplot()
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
                style = method_style(method)
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


def _headline_scores(run: Run) -> pd.DataFrame:
    """The run's lm-eval rows of each task's headline metric (from its stored config)."""
    scores = run.rows[run.rows["eval_kind"] == "lm_eval"]
    table = headline_metrics_of(run.config)
    headline = {task: headline_metric(task, task_rows["metric"], table)
                for task, task_rows in scores.groupby("eval_name")}
    return scores[scores["metric"] == scores["eval_name"].map(headline)]


def downstream_per_stage(runs: list[Run]):
    """lm-eval score after each stage it ran at, per task by its headline metric (acc_norm for
    HellaSwag, ARC-Challenge, OpenBookQA, acc otherwise: run_metrics.headline_metric), one line
    per method variant (mean over seeds), bars = ± 1.96 x lm-eval's standard error (mean over
    seeds): which of the task's items were drawn, not seeds."""
    plt = pyplot()
    scores = pd.concat([_headline_scores(r).assign(variant=r.variant, model_name=r.model,
                                                   method_name=r.method)
                        for r in runs] or [pd.DataFrame()])
    if scores.empty:
        return []
    out = []
    for model, per_model in scores.groupby("model_name"):
        tasks = sorted(per_model["eval_name"].unique())
        fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            per_task = per_model[per_model["eval_name"] == task]
            curves = list(per_task.groupby(["method_name", "variant"]))
            for i, ((method, variant), curve) in enumerate(curves):
                mean = curve.groupby("stage")[["value", "stderr"]].mean()
                style = method_style(method)
                dodge = 0.06 * (i - (len(curves) - 1) / 2)   # overlapping bars side by side
                ax.errorbar(mean.index + dodge, 100 * mean["value"], yerr=196 * mean["stderr"],
                            label=variant, marker=style["marker"], lw=style["linewidth"],
                            markersize=style["markersize"] * 0.7, color=style["color"], capsize=2)
            ax.set_xlabel("after stage (0 = base model)")
            ax.set_ylabel(f"{'/'.join(sorted(per_task['metric'].unique()))} (%)")
            ax.set_title(task)
            ax.legend(fontsize=8)
        fig.suptitle(f"{model}: downstream score per stage, each task by its headline metric "
                     f"(mean over seeds; bars: ± 1.96 lm-eval stderr over the task's items)",
                     fontsize=10)
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
    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or FIGURES:
        for stem, fig in FIGURES[name](runs):
            for fmt in formats:
                path = out_dir / f"{stem}.{fmt}"
                # no creation date in a PDF: the same runs give byte-identical files
                metadata = {"CreationDate": None} if fmt == "pdf" else None
                fig.savefig(path, dpi=120, bbox_inches="tight", metadata=metadata)
                written.append(path)
            plt.close(fig)
    return written

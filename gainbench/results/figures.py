"""The paper's figures, drawn from run folders alone (matplotlib, no model is run).

Each ``FIGURES`` entry takes the loaded runs and returns (or yields) ``(file stem, Figure)``
pairs; a figure whose data no run has (no per-token arrays, no interpolation rows) gives none.
Sign convention everywhere: a change is *after - before*, so negative = lower perplexity.
Here: the figures over whole runs (heatmaps, downstream accuracy) and the registry that
``write_figures`` / ``make_figures`` draw from; the figures read off fronts (trade-off, budget)
are in ``front_figures``, the analyses inside one adaptation in ``analysis_figures``, the shared
style in ``plotting``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from gainbench.results.analysis_figures import (combination_grids, interpolation_curves,
                                                per_token_histograms)
from gainbench.results.front_figures import budget_curves, tradeoff_scatter
from gainbench.results.plotting import (diverging_cells, method_order, method_style, pct_change,
                                        pyplot)
from gainbench.results.run_metrics import NOT_SCORED, headline_metric, headline_metrics_of
from gainbench.results.runs import Run, load_studies


def ppl_change_heatmaps(runs: list[Run]):
    """Per run: dPPL% of every domain after every stage, against the base model (one figure at
    a time: ``write_figures`` closes each before the next is drawn, however many runs); a cell
    the run did not score (eval.cells=matched) grey with ``-``, the title saying why."""
    plt = pyplot()
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
        # say why a cell is grey, not only that it is (diverging_cells draws NaN grey with '-')
        unscored = (f"\ngrey {NOT_SCORED}: only the cells the matched comparison reads"
                    if pd.isna(change).any() else "")
        ax.set_title(f"{run.label} on {run.model}, seed {run.seed}: PPL change vs base "
                     f"(blue = better; box = domain just trained){unscored}", fontsize=10)
        fig.tight_layout()
        yield f"heatmap_{run.run_id}", fig


def _headline_scores(run: Run) -> pd.DataFrame:
    """The run's lm-eval rows of each task's headline metric (from its stored config)."""
    scores = run.rows[run.rows["eval_kind"] == "lm_eval"]
    table = headline_metrics_of(run.config)
    headline = {task: headline_metric(task, task_rows["metric"], table)
                for task, task_rows in scores.groupby("eval_name")}
    return scores[scores["metric"] == scores["eval_name"].map(headline)]


def downstream_per_stage(runs: list[Run]):
    """lm-eval score at each stage it ran at, per task by its headline metric (acc_norm for
    HellaSwag, ARC-Challenge, OpenBookQA, acc otherwise: run_metrics.headline_metric), per
    method variant (mean over seeds), bars = ± 1.96 x lm-eval's standard error (mean over
    seeds): which of the task's items were drawn, not seeds.

    Only the evaluated stages are on the x axis, evenly spaced, each with its markers and bars;
    a line joins two of them only where they are consecutive stages (nothing was measured in
    between). Variants sit side by side within a stage, so equal scores stay visible."""
    plt = pyplot()
    scores = pd.concat([_headline_scores(r).assign(variant=r.variant, label=r.label,
                                                   model_name=r.model, method_name=r.method)
                        for r in runs] or [pd.DataFrame()])
    if scores.empty:
        return []
    out = []
    for model, per_model in scores.groupby("model_name"):
        tasks = sorted(per_model["eval_name"].unique())
        stages = sorted(int(s) for s in per_model["stage"].unique())
        position = {stage: i for i, stage in enumerate(stages)}
        curves = sorted(per_model.groupby(["method_name", "variant", "label"]).groups,
                        key=lambda key: (method_order(key[0]), key[1]))
        fig, axes = plt.subplots(1, len(tasks), figsize=((1.2 * len(stages) + 2.5) * len(tasks), 4),
                                 squeeze=False)
        for ax, task in zip(axes[0], tasks):
            per_task = per_model[per_model["eval_name"] == task]
            for i, (method, variant, label) in enumerate(curves):
                curve = per_task[per_task["variant"] == variant]
                if curve.empty:
                    continue
                mean = curve.groupby("stage")[["value", "stderr"]].mean()
                dodge = 0.6 * (i / (len(curves) - 1) - 0.5) if len(curves) > 1 else 0.0
                x = [position[int(s)] + dodge for s in mean.index]
                style = method_style(method)
                ax.errorbar(x, 100 * mean["value"], yerr=196 * mean["stderr"], label=label,
                            capsize=2, **{**style, "linestyle": "none",
                                          "markersize": style["markersize"] * 0.7})
                for (s0, y0), (s1, y1), x0, x1 in zip(mean["value"].items(),
                                                      list(mean["value"].items())[1:], x, x[1:]):
                    if s1 == s0 + 1:   # consecutive stages: the line says nothing unmeasured
                        ax.plot([x0, x1], [100 * y0, 100 * y1], color=style["color"],
                                lw=style["linewidth"], zorder=1)
            ax.set_xticks(range(len(stages)), [f"{s} (base)" if s == 0 else str(s) for s in stages])
            ax.set_xlim(-0.6, len(stages) - 0.4)
            ax.set_xlabel("after stage (only the stages lm-eval ran at)")
            ax.set_ylabel(f"{'/'.join(sorted(per_task['metric'].unique()))} (%)")
            ax.set_title(task)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        fig.suptitle(f"{model}: downstream score at the evaluated stages, each task by its headline "
                     f"metric\n(mean over seeds; bars: ± 1.96 lm-eval stderr over the task's items)",
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
    "budget": budget_curves,
}
# The figures drawn at chosen in-domain gains (``write_figures``' ``matched_at``).
AT_GAINS = ("budget",)


def write_figures(runs: list[Run], out_dir: Path, names=None, formats=("png", "pdf"),
                  matched_at=None) -> list[Path]:
    """The figures ``names`` (default: all) of ``runs`` in ``out_dir``; ``matched_at``: the
    in-domain gains (%) of the ``budget`` figure (default ``fronts.DEFAULT_TARGETS``)."""
    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or FIGURES:
        options = {"at": matched_at} if name in AT_GAINS else {}
        for stem, fig in FIGURES[name](runs, **options):
            for fmt in formats:
                path = out_dir / f"{stem}.{fmt}"
                # no creation date in a PDF: the same runs give byte-identical files
                metadata = {"CreationDate": None} if fmt == "pdf" else None
                fig.savefig(path, dpi=120, bbox_inches="tight", metadata=metadata)
                written.append(path)
            plt.close(fig)
    return written


def make_figures(paths, out_dir: Path, names=None, formats=("png", "pdf"), matched_at=None) -> str:
    """What ``gainbench-figures`` (``scripts/make_figures.py``) does: the figures of the runs
    under ``paths`` in ``out_dir``, read in comparable groups as the tables are
    (``runs.load_studies``): a folder of several results folders (``results/``) gives one
    subfolder per results folder and sequence, so no front mixes two sequences; several paths
    are read together (the ``budget`` figure of results folders of different budgets). Returns
    what it wrote, in words; FileNotFoundError when there is no run."""
    studies = load_studies(paths)
    if not studies:
        raise FileNotFoundError(f"no run folders (with run.json) under {list(map(str, paths))}")
    written = []
    for study in studies:
        folder = Path(out_dir) / study.slug if len(studies) > 1 else Path(out_dir)
        written += write_figures(study.runs, folder, names, formats, matched_at)
    where = f"{len(studies)} folders under {out_dir}" if len(studies) > 1 else str(out_dir)
    return f"wrote {len(written)} files to {where}"

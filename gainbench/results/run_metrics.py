"""The numbers of one run that the tables, the fronts, the figures and the end-of-run summary
share: its scalar metrics, its downstream accuracy changes (each task by its headline metric)
and its column-span diagnostic (over all matrices, and per matrix role).

Pure functions of a run's rows and stored config (formulas: gainbench.metrics); they read nothing
from disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Callable

import numpy as np
import pandas as pd

from gainbench import metrics
from gainbench.results.runs import Run

# Scalar metrics of one complete run, from its loss matrix (formulas: gainbench.metrics); each
# also takes a stack of matrices (the document bootstrap's), giving one value per matrix.
RUN_METRICS: dict[str, Callable[[np.ndarray], float]] = {
    "in-domain dPPL%": lambda L: metrics.in_domain_change(L).mean(axis=-1),
    "earlier dPPL% vs base": lambda L: metrics.earlier_domain_change_vs_base(L).mean(axis=-1),
    "earlier dPPL% vs just-trained": lambda L: metrics.earlier_domain_change_vs_trained(L).mean(axis=-1),
    "BWT (nats)": metrics.backward_transfer,
    "FWT (nats)": metrics.forward_transfer,
    "forgetting (nats)": metrics.forgetting,
    "final PPL (geo-mean)": metrics.final_ppl_geomean,
}


def run_metrics(run: Run) -> dict[str, float]:
    """``RUN_METRICS`` of one run; NaN for every metric when the run has not finished, and for a
    metric that reads a cell the run did not score (:func:`unscored_metrics`)."""
    if not run.complete:
        return {name: np.nan for name in RUN_METRICS}
    L = run.loss_matrix.values
    missing = unscored_metrics(L)
    return {name: np.nan if name in missing else float(fn(L)) for name, fn in RUN_METRICS.items()}


def unscored_metrics(L: np.ndarray) -> dict[str, str]:
    """The ``RUN_METRICS`` that read a cell of the loss matrix ``L`` (NaN: no row) the run did not
    score, each with the reason it is missing. A run with ``eval.cells=matched`` scores only the
    cells the matched comparison reads (gainbench.config.evaluation.scored_domains): its
    in-domain and earlier-domain changes, BWT, FWT and final PPL are whole; forgetting, which
    takes every earlier stage's loss of each domain, is missing, never a min over the cells
    there are."""
    L = np.asarray(L, dtype=float)
    gaps = np.isnan(L)
    out = {}
    for name in RUN_METRICS if gaps.any() else ():
        needed = _cells_read(name, *L.shape) & gaps
        if needed.any():
            k, j = np.argwhere(needed)[0]
            out[name] = (f"reads {int(needed.sum())} cell(s) of the PPL matrix this run did not "
                         f"score (eval.cells=matched), e.g. domain {j + 1} after stage {k}")
    return out


# The note of a table or figure with a cell a run did not score (NaN, printed ``-``).
NOT_SCORED = "- = not scored (eval.cells=matched)"


def missing_note(name: str, runs: list[Run], values) -> str:
    """Why metric ``name`` is ``-`` where some of ``runs`` (finished) lack it (NaN in ``values``,
    one per run), as a line for a table's note; "" when every run has it."""
    lacking = [run for run, value in zip(runs, values) if np.isnan(value)]
    if not lacking:
        return ""
    if all(r.cells == "matched" and name in unscored_metrics(r.loss_matrix.values) for r in lacking):
        return f"{name}: - for runs with eval.cells=matched, which do not score the cells it reads"
    why = unscored_metrics(lacking[0].loss_matrix.values).get(name, "its value is NaN")
    return f"{name}: - where a run lacks it ({lacking[0].run_id}: {why})"


@cache
def _cells_read(name: str, stages: int, domains: int) -> np.ndarray:
    """Which cells of a ``(stages, domains)`` loss matrix metric ``name`` reads: those whose NaN
    makes it NaN (the formulas are in gainbench.metrics; none of them skips a NaN)."""
    read = np.zeros((stages, domains), dtype=bool)
    for k in range(stages):
        for j in range(domains):
            probe = np.zeros((stages, domains))
            probe[k, j] = np.nan
            read[k, j] = np.isnan(RUN_METRICS[name](probe))
    return read


def default_headline_metrics() -> dict[str, str]:
    """The convention table, as the settings schema declares it (``eval.lm_eval.headline_metrics``)."""
    from gainbench.config.schema import LmEvalSettings

    return dict(LmEvalSettings().headline_metrics)


def headline_metrics_of(config: Mapping | None) -> dict[str, str]:
    """A run's task -> metric table: the one its run.json stored
    (``config.eval.lm_eval.headline_metrics``), or the convention for a run older than the setting."""
    stored = (((config or {}).get("eval") or {}).get("lm_eval") or {}).get("headline_metrics")
    return dict(stored) if stored is not None else default_headline_metrics()


def headline_metric(task: str, available: Iterable[str],
                    headline_metrics: Mapping[str, str] | None = None) -> str | None:
    """The metric a task is reported by, among the metrics lm-eval gave it (``available``).

    ``headline_metrics`` (default: the convention) names it per task; a task it does not list, or
    whose listed metric lm-eval did not report, falls back to ``acc``, else the first metric in
    alphabetical order (None if there is none).

    The convention (the schema's default) is the one of the Open LLM Leaderboard (v1) and of the
    zero-shot tables reported with lm-eval (GPT-NeoX/Pythia, Mamba and after): length-normalised
    accuracy ``acc_norm`` for HellaSwag, ARC-Challenge and OpenBookQA, whose answers are multi-token
    continuations of very different lengths; ``acc`` for the rest (ARC-Easy, PIQA, WinoGrande,
    BoolQ, SciQ and gainbench's own ``gb_*`` tasks). lm-eval 0.4's own YAMLs report both ``acc`` and
    ``acc_norm`` for hellaswag, arc_easy/arc_challenge, openbookqa, piqa and sciq and ``acc`` only
    for boolq and winogrande; its ``tinyBenchmarks`` copies of the Leaderboard tasks keep exactly
    the Leaderboard's choice: tinyArc and tinyHellaswag score ``acc_norm``.
    """
    available = sorted(set(available))
    table = default_headline_metrics() if headline_metrics is None else headline_metrics
    for candidate in (table.get(task), "acc"):
        if candidate in available:
            return candidate
    return available[0] if available else None


DOWNSTREAM_COLUMNS = ["task", "metric", "headline", "n", "base", "base stderr", "after",
                      "after stderr", "change (pts)", "stderr (pts)"]


def downstream_changes(run: Run) -> pd.DataFrame:
    """Per lm-eval task and metric: the score at stage 0 and at the run's last stage with lm-eval's
    standard errors (all in points, i.e. %), the change between them and its standard error;
    ``headline`` marks the metric the task is reported by (:func:`headline_metric`, from the
    run's stored config); ``n`` = the task's items. Empty if lm-eval did not run at both stages.

    lm-eval's stderr is the standard error of the mean over the task's items (sample standard
    deviation / sqrt(n)): it covers which items were drawn, not seeds or training noise."""
    scores = run.rows[run.rows["eval_kind"] == "lm_eval"]
    last = len(run.domains)
    table = headline_metrics_of(run.config)
    headline = {task: headline_metric(task, task_rows["metric"], table)
                for task, task_rows in scores.groupby("eval_name")}
    out = []
    for (task, metric), task_rows in scores.groupby(["eval_name", "metric"]):
        by_stage = task_rows.set_index("stage")
        if 0 not in by_stage.index or last not in by_stage.index:
            continue
        base, after = by_stage.loc[0], by_stage.loc[last]
        change, se = metrics.downstream_change(base["value"], after["value"], base["stderr"],
                                               after["stderr"])
        out.append({"task": task, "metric": metric, "headline": metric == headline[task],
                    "n": after["n"], "base": 100 * base["value"], "base stderr": 100 * base["stderr"],
                    "after": 100 * after["value"], "after stderr": 100 * after["stderr"],
                    "change (pts)": 100 * change, "stderr (pts)": 100 * se})
    return pd.DataFrame(out, columns=DOWNSTREAM_COLUMNS)


def diagnostic_summary(rows: pd.DataFrame) -> dict:
    """Column-span diagnostic at its last stage, over the matrices the run changed ({} if none).

    Means over changed matrices of the span residuals and of the update's relative size; the
    intruder dimensions summed."""
    diagnostic = rows[rows["eval_kind"] == "diagnostic"]
    if diagnostic.empty:
        return {}
    stage = int(diagnostic["stage"].max())
    table = diagnostic[diagnostic["stage"] == stage].pivot_table(
        index="eval_name", columns="metric", values="value")
    changed = table[table["update_rel_norm"] > 0]
    return {"stage": stage, "matrices measured": len(table), "matrices changed": len(changed),
            "update size": changed["update_rel_norm"].mean(),
            "update energy outside col(W)": changed["span_residual_column"].mean(),
            "outside row(W)": changed["span_residual_row"].mean(),
            "intruder dims": changed["intruder_dims"].sum()}


ROLE_COLUMNS = ["matrices", "changed", "shape [out, in]", "rank r", "update size",
                "outside col(W)", "random col", "outside row(W)", "random row", "intruder dims", "k"]



def diagnostic_by_role(rows: pd.DataFrame) -> pd.DataFrame:
    """Column-span diagnostic at its last stage, one line per matrix role (q, k, v, qkv, o, gate,
    up, gate_up, down: gainbench.models.architectures.matrix_role; a module no family lists is
    named by its last name part), over the role's matrices the run changed. Empty if none.

    ``update size`` = mean ||dW||_F / ||W0||_F; ``outside col(W)`` / ``outside row(W)`` = mean span
    residual (fraction of the update's energy outside W0's column / row span); ``random col`` /
    ``random row`` = the same for a random-direction update, (m - r)/m and (n - r)/n
    (gainbench.evaluation.analysis.column_span.random_residual), NaN for runs that predate them;
    ``intruder dims`` = sum over the role's matrices of the intruders among each one's top ``k``
    singular vectors; ``rank r`` = mean dimension of W0's reference subspace; ``shape`` from the
    baseline rows (``-`` without them, or when the role's matrices differ in shape)."""
    # here, not at the top: architectures imports transformers, which tables need only for this
    from gainbench.models.architectures import MATRIX_ROLES, matrix_role

    diagnostic = rows[rows["eval_kind"] == "diagnostic"]
    if diagnostic.empty:
        return pd.DataFrame(columns=ROLE_COLUMNS)
    at_last = diagnostic[diagnostic["stage"] == diagnostic["stage"].max()]
    values = at_last.pivot_table(index="eval_name", columns="metric", values="value")
    dims = at_last.pivot_table(index="eval_name", columns="metric", values="n")
    for metric in ("span_residual_column_random", "span_residual_row_random"):
        if metric not in values:
            values[metric], dims[metric] = np.nan, np.nan
    values["role"] = [matrix_role(name) or name.rsplit(".", 1)[-1] for name in values.index]
    out = {}
    for role, group in values.groupby("role", sort=False):
        changed = group[group["update_rel_norm"] > 0]
        if changed.empty:
            continue
        # the baselines' n are the matrix's [out, in]
        shapes = {f"{m:.0f} x {n:.0f}" for m, n in dims.loc[
            changed.index, ["span_residual_column_random", "span_residual_row_random"]].to_numpy()}
        out[role] = {
            "matrices": len(group), "changed": len(changed),
            "shape [out, in]": shapes.pop() if len(shapes) == 1 and "nan" not in min(shapes) else np.nan,
            "rank r": dims.loc[changed.index, "span_residual_column"].mean(),
            "update size": changed["update_rel_norm"].mean(),
            "outside col(W)": changed["span_residual_column"].mean(),
            "random col": changed["span_residual_column_random"].mean(),
            "outside row(W)": changed["span_residual_row"].mean(),
            "random row": changed["span_residual_row_random"].mean(),
            "intruder dims": changed["intruder_dims"].sum(),
            "k": dims.loc[changed.index, "intruder_dims"].max()}
    order = sorted(out, key=lambda r: (MATRIX_ROLES.index(r) if r in MATRIX_ROLES else len(MATRIX_ROLES), r))
    return pd.DataFrame([out[r] for r in order], index=pd.Index(order, name="role"),
                        columns=ROLE_COLUMNS)

"""The numbers of one run that the tables, the fronts, the figures and the end-of-run summary
share: its scalar metrics, its downstream accuracy changes and its column-span diagnostic.

Pure functions of a run's rows (formulas: gainbench.metrics); they read nothing from disk.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from gainbench import metrics
from gainbench.results.runs import Run

# Scalar metrics of one complete run, from its loss matrix (formulas: gainbench.metrics).
RUN_METRICS: dict[str, Callable[[np.ndarray], float]] = {
    "in-domain dPPL%": lambda L: metrics.in_domain_change(L).mean(),
    "earlier dPPL% vs base": lambda L: metrics.earlier_domain_change_vs_base(L).mean(),
    "earlier dPPL% vs just-trained": lambda L: metrics.earlier_domain_change_vs_trained(L).mean(),
    "BWT (nats)": metrics.backward_transfer,
    "FWT (nats)": metrics.forward_transfer,
    "forgetting (nats)": metrics.forgetting,
    "final PPL (geo-mean)": metrics.final_ppl_geomean,
}


def run_metrics(run: Run) -> dict[str, float]:
    """``RUN_METRICS`` of one run; NaN for every metric when the run has not finished."""
    if not run.complete:
        return {name: np.nan for name in RUN_METRICS}
    L = run.loss_matrix.values
    return {name: float(fn(L)) for name, fn in RUN_METRICS.items()}


def downstream_changes(run: Run) -> pd.DataFrame:
    """Per lm-eval task and metric: accuracy change (points) from stage 0 to the run's last
    stage and its standard error (points); empty if lm-eval did not run at both."""
    scores = run.rows[run.rows["eval_kind"] == "lm_eval"]
    last = len(run.domains)
    out = []
    for (task, metric), task_rows in scores.groupby(["eval_name", "metric"]):
        by_stage = task_rows.set_index("stage")
        if 0 not in by_stage.index or last not in by_stage.index:
            continue
        change, se = metrics.downstream_change(by_stage.at[0, "value"], by_stage.at[last, "value"],
                                               by_stage.at[0, "stderr"], by_stage.at[last, "stderr"])
        out.append({"task": task, "metric": metric, "base": 100 * by_stage.at[0, "value"],
                    "change (pts)": 100 * change, "stderr (pts)": 100 * se})
    return pd.DataFrame(out, columns=["task", "metric", "base", "change (pts)", "stderr (pts)"])


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

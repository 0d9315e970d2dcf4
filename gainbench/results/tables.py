"""Tables computed from run folders alone (rows.parquet + run.json); nothing here runs a model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from gainbench import metrics


def find_runs(paths) -> list[Path]:
    """Run folders under the given paths (a run folder itself or any folder above runs)."""
    runs = set()
    for path in map(Path, paths):
        runs.update(p.parent for p in path.rglob("run.json"))
    return sorted(runs)


def load_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    meta = json.loads((run_dir / "run.json").read_text())
    rows = pd.read_parquet(run_dir / "rows.parquet")
    return meta, rows[rows["stage"].isin(meta["finished_stages"])]


def run_summary(meta: dict, rows: pd.DataFrame) -> dict:
    """One line per run: adaptation, earlier-domain change, CL metrics, downstream drift.

    Cells a run cannot fill (an unfinished run, no lm-eval at its last stage) are NaN,
    shown as missing, never as zero.
    """
    order = meta["config"]["sequence"]["order"]
    L = metrics.loss_matrix(rows, order)
    line = {"model": meta["config"]["model"]["name"], "method": meta["config"]["method"]["name"],
            "seed": meta["config"]["seed"], "trainable params": meta.get("trainable_params"),
            "stages done": f"{len(L) - 1}/{len(order)}"}
    complete = len(L) == len(order) + 1
    values = L.values
    line.update({
        "in-domain dPPL% (mean)": metrics.in_domain_change(values).mean() if complete else np.nan,
        "earlier dPPL% vs base": metrics.earlier_domain_change_vs_base(values).mean() if complete else np.nan,
        "earlier dPPL% vs just-trained": (metrics.earlier_domain_change_vs_trained(values).mean()
                                          if complete else np.nan),
        "BWT (nats)": metrics.backward_transfer(values) if complete else np.nan,
        "FWT (nats)": metrics.forward_transfer(values) if complete else np.nan,
        "forgetting (nats)": metrics.forgetting(values) if complete else np.nan,
    })
    downstream = rows[(rows["eval_kind"] == "lm_eval") & (rows["metric"] == "acc")]
    last = len(order)
    for task, task_rows in downstream.groupby("eval_name"):
        by_stage = task_rows.set_index("stage")["value"]
        drift = by_stage.get(last, np.nan) - by_stage.get(0, np.nan)
        line[f"{task} acc change (pts)"] = 100 * drift
    summary = diagnostic_summary(rows)
    line.update({k: summary[k] for k in DIAGNOSTIC_COLUMNS if k in summary})
    line["wall time (s)"] = sum(meta.get("stage_seconds", {}).values())
    line["run"] = meta.get("run_id")
    return line


DIAGNOSTIC_COLUMNS = ("matrices changed", "update energy outside col(W)", "outside row(W)",
                      "intruder dims")


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


def comparison_table(paths) -> pd.DataFrame:
    lines = [run_summary(*load_run(run_dir)) for run_dir in find_runs(paths)]
    table = pd.DataFrame(lines).sort_values(["model", "method", "seed"]).reset_index(drop=True)
    last = ["wall time (s)", "run"]
    return table[[c for c in table.columns if c not in last] + last]

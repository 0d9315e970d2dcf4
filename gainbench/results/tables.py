"""The paper's tables, computed from run folders alone (rows.parquet + run.json).

Every table is one entry of ``TABLES``: a title, a note that says how to read it, and a
function from the loaded runs to one or more numeric DataFrames. Adding a table is adding an
entry. Numbers stay numeric here (the golden tests compare them exactly);
``gainbench.results.render`` turns them into Markdown or LaTeX, printing ``mean ± half-width``
where seeds give an interval and ``-`` for a cell no run could fill (never 0). One run's numbers
come from ``gainbench.results.run_metrics``; the matched comparison from
``gainbench.results.fronts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from gainbench import metrics
from gainbench.results.fronts import matched_comparison
from gainbench.results.run_metrics import diagnostic_summary, downstream_changes, run_metrics
from gainbench.results.runs import Run, load_runs

CI = " ±"  # suffix of a column holding the 95% half-width of the column it follows


def _index(runs: list[Run]) -> list[str]:
    # The sequence joins the index only when runs of several sequences are read together.
    return ["model", "sequence", "method"] if len({r.sequence for r in runs}) > 1 else ["model", "method"]


def _aggregate(runs: list[Run], names: list[str]) -> pd.DataFrame:
    """Mean and 95% half-width over seeds of ``run_metrics`` per (model, variant); ``seeds``
    counts the finished runs (an unfinished one is listed only in the ``runs`` table)."""
    lines = []
    for run in runs:
        line = {"model": run.model, "sequence": run.sequence, "method": run.variant,
                "seed": run.seed}
        line.update(run_metrics(run))
        lines.append(line)
    frame = pd.DataFrame(lines)
    index = _index(runs)
    out = []
    for key, group in frame.groupby(index, sort=False):
        line = dict(zip(index, key if isinstance(key, tuple) else (key,)))
        for name in names:
            line[name], line[name + CI], line["seeds"] = metrics.mean_ci(group[name])
        line = {**{k: line[k] for k in index}, "seeds": line.pop("seeds"), **line}
        out.append(line)
    return pd.DataFrame(out).set_index(index)


def trainable_params_table(runs):
    frame = pd.DataFrame([{"model": r.model, "method": r.method,
                           "trainable": r.meta.get("trainable_params", np.nan)} for r in runs])
    table = frame.pivot_table(index="method", columns="model", values="trainable", aggfunc="first")
    return [("", table)]


def adaptation_table(runs):
    return [("", _aggregate(runs, ["in-domain dPPL%", "final PPL (geo-mean)"]))]


def earlier_domains_table(runs):
    return [("", _aggregate(runs, ["earlier dPPL% vs base", "earlier dPPL% vs just-trained"]))]


def transfer_table(runs):
    return [("", _aggregate(runs, ["BWT (nats)", "FWT (nats)", "forgetting (nats)"]))]


def downstream_table(runs):
    """Per model: task x method, mean change over seeds ± 1.96 x the mean lm-eval stderr."""
    lines = []
    for run in runs:
        for _, row in downstream_changes(run).iterrows():
            lines.append({"model": run.model, "method": run.variant,
                          "task": f"{row['task']} {row['metric']}", "change": row["change (pts)"],
                          "se": row["stderr (pts)"], "base": row["base"]})
    if not lines:
        return []
    frame = pd.DataFrame(lines)
    out = []
    for model, group in frame.groupby("model", sort=False):
        stats = group.groupby(["task", "method"], sort=False).agg(
            change=("change", "mean"), se=("se", "mean"), base=("base", "mean"))
        table = stats["change"].unstack("method")
        half = (1.96 * stats["se"]).unstack("method")
        table = pd.concat({m: pd.DataFrame({m: table[m], m + CI: half[m]}) for m in table.columns},
                          axis=1).droplevel(0, axis=1)
        table.insert(0, "base acc (%)", stats["base"].groupby("task", sort=False).mean())
        out.append((model, table))
    return out


def ppl_matrix_tables(runs):
    out = []
    for run in runs:
        ppl = np.exp(run.loss_matrix)
        ppl.index = [f"{s}: {'base' if s == 0 else run.domains[s - 1]}" for s in ppl.index]
        ppl.index.name = "after stage"
        out.append((run.run_id, ppl))
    return out


def runs_table(runs):
    return [("", comparison_table(runs=runs))]


def matched_table(runs, at=None):
    """At the middle of each pair's common gain range, or at each in-domain gain of ``at``."""
    tables = [matched_comparison(runs, at=g) for g in (at or [None])]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if table.empty:
        return []
    return [("", table.set_index(["model", "method A", "method B", "earlier change"]))]


@dataclass(frozen=True)
class Table:
    title: str
    note: str
    build: Callable[[list[Run]], list[tuple[str, pd.DataFrame]]]


TABLES: dict[str, Table] = {
    "params": Table("Trainable parameters", "per method (rows) and model (columns)",
                    trainable_params_table),
    "adaptation": Table(
        "In-domain adaptation",
        "dPPL% of each stage on its own domain, mean over the stages (negative = adapted); "
        "final PPL = geometric mean over all domains after the last stage", adaptation_table),
    "earlier": Table(
        "Earlier domains after the last stage",
        "mean over domains 1..T-1 of the final PPL change, against the base model and against "
        "right after the domain was trained (negative = better, positive = forgot)",
        earlier_domains_table),
    "transfer": Table(
        "Backward / forward transfer and forgetting",
        "BWT < 0 = forgetting; FWT > 0 = earlier stages helped later domains; forgetting "
        "(Chaudhry) > 0 = final loss above the best the domain ever had, < 0 = still improving; "
        "nats per token", transfer_table),
    "downstream": Table(
        "Downstream accuracy change after the last stage",
        "points vs the base model per lm-eval task; ± = 1.96 x lm-eval's standard error of the "
        "difference (item sampling), averaged over seeds", downstream_table),
    "matched": Table(
        "Earlier-domain change at matched in-domain gain",
        "each method's front (earlier-domain change vs in-domain gain over its learning rates, "
        "mean over seeds) interpolated at the middle of its common gain range with method B, "
        "never extrapolated; A - B < 0 = A keeps earlier domains better; lo/hi = 95% bootstrap "
        "interval over seeds (gainbench/results/fronts.py)", matched_table),
    "ppl_matrix": Table("Validation perplexity per run",
                        "rows: after stage k (0 = base), columns: domains", ppl_matrix_tables),
    "runs": Table("Every run", "one line per run folder", runs_table),
}


def build_tables(paths, names=None, matched_at=None) -> dict[str, list[tuple[str, pd.DataFrame]]]:
    """``matched_at``: in-domain gains (%) at which the ``matched`` table compares the fronts
    (default: the middle of each pair's common range)."""
    runs = load_runs(paths)
    if not runs:
        raise FileNotFoundError(f"no run folders (with run.json) under {list(map(str, paths))}")
    unknown = sorted(set(names or ()) - set(TABLES))
    if unknown:
        raise KeyError(f"unknown table(s) {unknown}; known: {sorted(TABLES)}")
    return {name: (matched_table(runs, matched_at) if name == "matched" else TABLES[name].build(runs))
            for name in (names or TABLES)}


# --- one line per run ------------------------------------------------------------------------

DIAGNOSTIC_COLUMNS = ("matrices changed", "update energy outside col(W)", "outside row(W)",
                      "intruder dims")


def run_summary(run: Run) -> dict:
    """One line per run: adaptation, earlier-domain change, CL metrics, downstream drift.

    Cells a run cannot fill (an unfinished run, no lm-eval at its last stage) are NaN,
    shown as missing, never as zero.
    """
    line = {"model": run.model, "method": run.variant, "seed": run.seed,
            "trainable params": run.meta.get("trainable_params"),
            "stages done": f"{len(run.loss_matrix) - 1}/{len(run.domains)}"}
    line.update(run_metrics(run))
    for _, row in downstream_changes(run).iterrows():
        if row["metric"] == "acc":
            line[f"{row['task']} acc change (pts)"] = row["change (pts)"]
    summary = diagnostic_summary(run.rows)
    line.update({k: summary[k] for k in DIAGNOSTIC_COLUMNS if k in summary})
    line["wall time (s)"] = sum(run.meta.get("stage_seconds", {}).values())
    line["run"] = run.run_id
    return line


def comparison_table(paths=None, runs=None) -> pd.DataFrame:
    """One line per run (``run_summary``) of the runs under ``paths`` (or of ``runs``)."""
    runs = load_runs(paths) if runs is None else runs
    table = pd.DataFrame([run_summary(r) for r in runs])
    table = table.sort_values(["model", "method", "seed"]).reset_index(drop=True)
    last = ["wall time (s)", "run"]
    return table[[c for c in table.columns if c not in last] + last]

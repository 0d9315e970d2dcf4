"""The paper's tables, computed from run folders alone (rows.parquet + run.json).

Every table is one entry of ``TABLES``: a title, a note that says how to read it, and a
function from the loaded runs to one or more numeric DataFrames. Adding a table is adding an
entry. Numbers stay numeric here (the golden tests compare them exactly); ``render`` turns them
into Markdown or LaTeX, printing ``mean ± half-width`` where seeds give an interval and ``-``
for a cell no run could fill (never 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from gainbench import metrics
from gainbench.results.runs import Run, load_runs

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
CI = " ±"  # suffix of a column holding the 95% half-width of the column it follows


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
    from gainbench.results.fronts import matched_comparison

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


def comparison_table(paths=None, runs=None) -> pd.DataFrame:
    """One line per run (``run_summary``) of the runs under ``paths`` (or of ``runs``)."""
    runs = load_runs(paths) if runs is None else runs
    table = pd.DataFrame([run_summary(r) for r in runs])
    table = table.sort_values(["model", "method", "seed"]).reset_index(drop=True)
    last = ["wall time (s)", "run"]
    return table[[c for c in table.columns if c not in last] + last]


# --- rendering -------------------------------------------------------------------------------

def _merge_intervals(table: pd.DataFrame, precision: int) -> pd.DataFrame:
    """Numbers to text: ``x ± h`` where a ``<col> ±`` column holds h, ``-`` where missing.
    Columns in nats get two more decimals (their values are a hundred times smaller)."""
    def fmt(value, precision):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "-"
        if isinstance(value, (float, np.floating)):
            return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.{precision}f}"
        if isinstance(value, (int, np.integer)):
            return f"{value:,}"
        return str(value)

    out = pd.DataFrame(index=table.index)
    for col in table.columns:
        if str(col).endswith(CI):
            continue
        digits = precision + 2 if "nats" in str(col) else precision
        text = table[col].map(lambda v: fmt(v, digits))
        if f"{col}{CI}" in table.columns:
            half = table[f"{col}{CI}"]
            text = [t if t == "-" or pd.isna(h) else f"{t} ± {h:.{digits}f}"
                    for t, h in zip(text, half)]
        out[col] = text
    return out


def render(name: str, tables: list[tuple[str, pd.DataFrame]], fmt: str = "md",
           precision: int = 2) -> str:
    spec = TABLES[name]
    parts = []
    for caption, table in tables:
        title = f"{spec.title}{f' ({caption})' if caption else ''}"
        text = _merge_intervals(table, precision)
        if not isinstance(table.index, pd.RangeIndex):   # index levels become leading columns
            text, table = text.reset_index(), table.reset_index()
        numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in text.columns]
        if fmt == "md":
            parts.append(f"### {title}\n\n{spec.note}.\n\n" + text.to_markdown(
                index=False, disable_numparse=True,
                colalign=["right" if n else "left" for n in numeric]) + "\n")
        elif fmt == "latex":
            styler = (text.style.hide(axis="index").format(escape="latex")
                      .format_index(escape="latex", axis=1))
            parts.append(styler.to_latex(caption=f"{title}: {spec.note}.", hrules=True))
        else:
            raise ValueError(f"unknown format {fmt!r} (md or latex)")
    return "\n".join(parts)

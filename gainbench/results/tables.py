"""The paper's tables, computed from run folders alone (rows.parquet + run.json).

Every table is one entry of ``TABLES``: a title, a note that says how to read it, and a
function from the loaded runs to one or more numeric DataFrames. Adding a table is adding an
entry. Numbers stay numeric here (the golden tests compare them exactly);
``gainbench.results.render`` turns them into Markdown or LaTeX, printing ``mean ± half-width``
where seeds give an interval and ``-`` for a cell no run could fill (never 0), its reason in the
frame's ``attrs["notes"]`` when the runs have one (``aggregate.with_notes``). One run's numbers
come from ``gainbench.results.run_metrics``; the matched comparison from
``gainbench.results.fronts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from gainbench.results.aggregate import CI, aggregate, with_notes
from gainbench.results.fronts import BUDGET, DEFAULT_TARGETS, matched_comparison, matched_values
from gainbench.results.run_metrics import (NOT_SCORED, RUN_METRICS, diagnostic_by_role,
                                           diagnostic_summary, downstream_changes, missing_note,
                                           run_metrics)
from gainbench.results.runs import Run, Study, load_runs, load_studies

# What the ± of the per-method tables covers (gainbench/results/intervals.py).
COVERS = ("; ± = 95% interval over the validation documents (paired bootstrap) and the seeds "
          "(Student-t) when every run records per-document NLL, over the seeds alone when not "
          "(runs made before gainbench recorded documents), none for one seed")


def trainable_params_table(runs):
    frame = pd.DataFrame([{"model": r.model, "method": r.method,
                           "trainable": r.meta.get("trainable_params", np.nan)} for r in runs])
    table = frame.pivot_table(index="method", columns="model", values="trainable", aggfunc="first")
    return [("", table)]


def adaptation_table(runs):
    return [("", aggregate(runs, ["in-domain dPPL%", "final PPL (geo-mean)"]))]


def earlier_domains_table(runs):
    return [("", aggregate(runs, ["earlier dPPL% vs base", "earlier dPPL% vs just-trained"]))]


def transfer_table(runs):
    return [("", aggregate(runs, ["BWT (nats)", "FWT (nats)", "forgetting (nats)"]))]


def downstream_table(runs):
    """Per model: task (by its headline metric, from each run's stored config) x method, mean
    change over seeds ± 1.96 x the mean lm-eval stderr of the difference; the base score
    ± 1.96 x its lm-eval stderr."""
    lines = []
    for run in runs:
        for _, row in downstream_changes(run).iterrows():
            if not row["headline"]:
                continue
            lines.append({"model": run.model, "method": run.variant,
                          "task": f"{row['task']} {row['metric']}", "change": row["change (pts)"],
                          "se": row["stderr (pts)"], "base": row["base"],
                          "base se": row["base stderr"]})
    if not lines:
        return []
    frame = pd.DataFrame(lines)
    out = []
    for model, group in frame.groupby("model", sort=False):
        stats = group.groupby(["task", "method"], sort=False).agg(
            change=("change", "mean"), se=("se", "mean"), base=("base", "mean"),
            base_se=("base se", "mean"))
        table = stats["change"].unstack("method")
        half = (1.96 * stats["se"]).unstack("method")
        table = pd.concat({m: pd.DataFrame({m: table[m], m + CI: half[m]}) for m in table.columns},
                          axis=1).droplevel(0, axis=1)
        by_task = stats.groupby("task", sort=False)
        table.insert(0, "base acc (%)", by_task["base"].mean())
        table.insert(1, "base acc (%)" + CI, 1.96 * by_task["base_se"].mean())
        out.append((model, table))
    return out


def diagnostic_table(runs):
    """Per model: the column-span diagnostic per method variant and matrix role
    (``diagnostic_by_role``), mean over seeds; roles no run of the variant changed are left out."""
    lines = []
    for run in runs:
        for role, row in diagnostic_by_role(run.rows).iterrows():
            lines.append({"model": run.model, "method": run.variant, "role": role,
                          "seed": run.seed, **row.to_dict()})
    if not lines:
        return []
    frame = pd.DataFrame(lines)
    numeric = ["matrices", "changed", "rank r", "update size", "outside col(W)", "random col",
               "outside row(W)", "random row", "intruder dims", "k"]
    frame[numeric] = frame[numeric].astype(float)
    out = []
    for model, group in frame.groupby("model", sort=False):
        table = group.groupby(["method", "role"], sort=False).agg(
            seeds=("seed", "nunique"), **{c: (c, "mean") for c in numeric},
            **{"shape [out, in]": ("shape [out, in]", "first")})
        table["update size"] *= 100
        table = table.rename(columns={"update size": "update size (%)"})[
            ["seeds", "matrices", "changed", "shape [out, in]", "rank r", "update size (%)",
             "outside col(W)", "random col", "outside row(W)", "random row", "intruder dims", "k"]]
        for col in ("matrices", "changed", "rank r", "intruder dims", "k"):
            if table[col].notna().all() and (table[col] % 1 == 0).all():
                table[col] = table[col].astype(int)   # counts print as counts
        out.append((model, table))
    return out


def ppl_matrix_tables(runs):
    out = []
    for run in runs:
        ppl = np.exp(run.loss_matrix)
        ppl.index = [f"{s}: {'base' if s == 0 else run.domains[s - 1]}" for s in ppl.index]
        ppl.index.name = "after stage"
        out.append((run.run_id, with_notes(ppl, [NOT_SCORED if ppl.isna().any(axis=None) else ""])))
    return out


def runs_table(runs):
    return [("", comparison_table(runs=runs))]


def matched_table(runs, at=None):
    """At the middle of each pair's common gain range, or at each in-domain gain of ``at``; per
    model and budget (``fronts.BUDGET``: methods are compared within one)."""
    tables = [matched_comparison(runs, at=g) for g in (at or [None])]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if table.empty:
        return []
    return [("", table.set_index(["model", *BUDGET, "method A", "method B", "earlier change"]))]


def budget_table(runs, at=None):
    """Each method's own earlier-domain change at each in-domain gain of ``at`` (default
    ``fronts.DEFAULT_TARGETS``), a method's budgets in consecutive rows."""
    table = matched_values(runs, at or DEFAULT_TARGETS)
    if table.empty:
        return []
    index = ["model", "earlier change", "at gain", "method", *BUDGET]
    return [("", table.set_index(index).sort_index())]


@dataclass(frozen=True)
class Table:
    title: str
    note: str
    build: Callable[[list[Run]], list[tuple[str, pd.DataFrame]]]
    missing: str = "no run has the rows this table needs"   # printed when ``build`` returns nothing


TABLES: dict[str, Table] = {
    "params": Table("Trainable parameters", "per method (rows) and model (columns)",
                    trainable_params_table),
    "adaptation": Table(
        "In-domain adaptation",
        "dPPL% of each stage on its own domain, mean over the stages (negative = adapted); "
        "final PPL = geometric mean over all domains after the last stage" + COVERS,
        adaptation_table),
    "earlier": Table(
        "Earlier domains after the last stage",
        "mean over domains 1..T-1 of the final PPL change, against the base model and against "
        "right after the domain was trained (negative = better, positive = forgot)" + COVERS,
        earlier_domains_table),
    "transfer": Table(
        "Backward / forward transfer and forgetting",
        "BWT < 0 = forgetting; FWT > 0 = earlier stages helped later domains; forgetting "
        "(Chaudhry) > 0 = final loss above the best the domain ever had, < 0 = still improving; "
        "nats per token" + COVERS, transfer_table),
    "downstream": Table(
        "Downstream accuracy change after the last stage",
        "points vs the base model per lm-eval task, each by its headline metric (acc_norm for "
        "HellaSwag, ARC-Challenge, OpenBookQA, acc otherwise; eval.lm_eval.headline_metrics); "
        "± = 1.96 x lm-eval's standard error, of the base score and of the difference (both "
        "stages' errors combined as if independent, which over-states it for the same items), "
        "averaged over seeds: it covers which of the task's items were drawn, not seeds or "
        "training noise", downstream_table,
        "no run ran lm-eval at both stage 0 and its last stage (eval.lm_eval.stages)"),
    "diagnostic": Table(
        "Column-span diagnostic per matrix role after the last stage",
        "cumulative update dW vs the base weights W, over the matrices of each role the method "
        "changed (mean over them and over seeds): update size = 100 |dW|/|W|; outside col(W) / "
        "row(W) = fraction of the update's energy outside W's column / row span, beside a "
        "random-direction update's (m - r)/m and (n - r)/n for W of shape [out m, in n] and rank "
        "r: where that is 0 the span is the whole space and every method keeps it, so only the "
        "other roles can tell methods apart; intruder dims = new directions among each matrix's "
        "top k singular vectors (sum over the role); - = not recorded (runs before the baseline "
        "rows)", diagnostic_table,
        "no run recorded the column-span diagnostic, or none changed a measured matrix "
        "(eval.diagnostics)"),
    "matched": Table(
        "Earlier-domain change at matched in-domain gain",
        "every method (A) against LoRA (B), then GAIN and GAIN-FFN against replay-LoRA and EWC "
        "where they ran (the pairs the paper's claims name); each seed's front (earlier-domain "
        "change vs in-domain gain over its learning rates) interpolated at the target gain "
        "(default: the middle of the common gain range with "
        "method B) strictly inside its measured points, never extrapolated; A - B (mean over "
        "the seeds both ran) < 0 = A keeps earlier domains better; lo/hi = 95% interval over "
        "what the 'covers' column names: validation documents (paired bootstrap), seeds "
        "(Student-t) and an interpolation allowance (gainbench/results/fronts.py); methods are "
        "compared only within one budget (tokens/stage = train.tokens_per_stage, steps/stage = "
        "the optimiser steps it makes; - = not recorded)", matched_table),
    "budget": Table(
        "Each method's earlier-domain change at matched in-domain gain, per budget",
        "each seed's front read at the target gain (default 2, 4, 8%) strictly inside its "
        "measured points, never extrapolated; value = mean over seeds (negative = better); lo/hi "
        "= 95% interval over what 'covers' names: validation documents (bootstrap), seeds "
        "(Student-t) and an interpolation allowance; a method that does not reach a target at a "
        "budget has no value, the reason beside it (gainbench/results/fronts.py, value_at; "
        "the figure: gainbench-figures --figures budget)", budget_table),
    "ppl_matrix": Table("Validation perplexity per run",
                        "rows: after stage k (0 = base), columns: domains", ppl_matrix_tables),
    "runs": Table("Every run", "one line per run folder", runs_table),
}


# One line or one matrix per run: long over a sweep, so ``make_tables`` prints them only when
# named (``--tables runs``); ``--out`` writes them beside the others.
PER_RUN_TABLES = ("ppl_matrix", "runs")


def _check_names(names) -> None:
    unknown = sorted(set(names or ()) - set(TABLES))
    if unknown:
        raise KeyError(f"unknown table(s) {unknown}; known: {sorted(TABLES)}")


def tables_of(runs: list[Run], names=None, matched_at=None) -> dict[str, list[tuple[str, pd.DataFrame]]]:
    """The tables ``names`` (default: all) of the loaded runs; ``matched_at`` as in
    ``build_tables`` (for the ``budget`` table too)."""
    _check_names(names)
    at_gains = {"matched": matched_table, "budget": budget_table}   # the tables ``matched_at`` sets
    return {name: (at_gains[name](runs, matched_at) if name in at_gains else TABLES[name].build(runs))
            for name in (names or TABLES)}


def build_tables(paths, names=None, matched_at=None) -> dict[str, list[tuple[str, pd.DataFrame]]]:
    """Every run under ``paths`` read together. ``matched_at``: in-domain gains (%) at which the
    ``matched`` table compares the fronts (default: the middle of each pair's common range)."""
    _check_names(names)
    runs = load_runs(paths)
    if not runs:
        raise FileNotFoundError(f"no run folders (with run.json) under {list(map(str, paths))}")
    return tables_of(runs, names, matched_at)


def build_studies(paths, names=None, matched_at=None) -> list[tuple[Study, dict]]:
    """The tables of each group of comparable runs under ``paths`` (``runs.load_studies``: one
    per sequence, and per results folder when one path holds several)."""
    _check_names(names)
    studies = load_studies(paths)
    if not studies:
        raise FileNotFoundError(f"no run folders (with run.json) under {list(map(str, paths))}")
    return [(study, tables_of(study.runs, names, matched_at)) for study in studies]


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
        if row["headline"]:
            line[f"{row['task']} {row['metric']} change (pts)"] = row["change (pts)"]
    summary = diagnostic_summary(run.rows)
    line.update({k: summary[k] for k in DIAGNOSTIC_COLUMNS if k in summary})
    line["wall time (s)"] = sum(run.meta.get("stage_seconds", {}).values())
    line["run"] = run.run_id
    return line


def comparison_table(paths=None, runs=None) -> pd.DataFrame:
    """One line per run (``run_summary``) of the runs under ``paths`` (or of ``runs``)."""
    runs = load_runs(paths) if runs is None else runs
    # a method's variants by learning rate, not by their labels' spelling (2e-5 after 0.0003)
    runs = sorted(runs, key=lambda r: (r.model, r.method, r.lr, r.variant, r.seed))
    table = pd.DataFrame([run_summary(r) for r in runs])
    last = ["wall time (s)", "run"]
    finished = [i for i, r in enumerate(runs) if r.complete]   # '-' of the others: stages done
    notes = [missing_note(name, [runs[i] for i in finished], table.loc[finished, name].to_numpy(float))
             for name in RUN_METRICS]
    return with_notes(table[[c for c in table.columns if c not in last] + last], notes)

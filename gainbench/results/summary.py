"""The one-screen summary printed at the end of a run: PPL matrix, in-domain and earlier-domain
changes, continual-learning metrics, the column-span diagnostic per matrix role and downstream
accuracy (each task by its headline metric, with lm-eval's standard error)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from gainbench import metrics
from gainbench.results.intervals import DOCUMENT_KIND, change_standard_error
from gainbench.results.run_metrics import (diagnostic_by_role, diagnostic_summary,
                                           headline_metric, unscored_metrics)


def summary_text(rows: pd.DataFrame, domains: list[str],
                 headline_metrics: Mapping[str, str] | None = None) -> str:
    """``headline_metrics``: the run's ``eval.lm_eval.headline_metrics`` (default: the convention,
    gainbench.results.run_metrics.headline_metric)."""
    if rows.empty:
        return "(no finished stages)"
    run = rows.iloc[0]
    L = metrics.loss_matrix(rows, domains)
    lines = [f"== {run['model']} x {run['method']} x {run['sequence']} (seed {run['seed']}) =="]
    ppl = np.exp(L)
    ppl.index = [f"{s}: {'base' if s == 0 else domains[s - 1]}" for s in ppl.index]
    ppl.index.name = "after stage"
    lines += ["", "Validation perplexity (rows: after stage, columns: domain)",
              ppl.round(2).to_string(na_rep="-")]
    if L.isna().any(axis=None):
        lines.append("(-: not scored; eval.cells=matched scores every domain at stage 0 and the "
                     "last stage, and domains k and k+1 after stage k)")
    lines += _validation_set_lines(rows, domains)
    T = len(domains)
    if len(L) == T + 1:  # the change tables need every stage
        table = pd.DataFrame({
            "in-domain dPPL% (stage k vs k-1)": metrics.in_domain_change(L.values),
            "final vs base dPPL%": np.append(metrics.earlier_domain_change_vs_base(L.values), np.nan),
            "final vs just-trained dPPL%": np.append(
                metrics.earlier_domain_change_vs_trained(L.values), np.nan),
        }, index=domains)
        lines += ["", "Per domain (negative = lower PPL = better; the last domain has no 'earlier' change)",
                  table.round(2).to_string(na_rep="-")]
        missing = unscored_metrics(L.values)   # "-", never a value from part of the matrix

        def shown(name: str, value, form: str, unit: str = "") -> str:
            return "-" if name in missing else format(float(value), form) + unit
        lines.append("")
        transfer = ""
        if T > 1:  # a one-domain sequence has no earlier domain, so no transfer either
            lines.append("Earlier domains, final vs base: mean " + shown(
                "earlier dPPL% vs base", metrics.earlier_domain_change_vs_base(L.values).mean(), "+.2f")
                + "%   vs just-trained: mean " + shown(
                "earlier dPPL% vs just-trained",
                metrics.earlier_domain_change_vs_trained(L.values).mean(), "+.2f") + "%")
            nats = " nats"
            transfer = (f"BWT {shown('BWT (nats)', metrics.backward_transfer(L.values), '+.4f', nats)}"
                        " (negative = forgetting)   "
                        f"FWT {shown('FWT (nats)', metrics.forward_transfer(L.values), '+.4f', nats)}   "
                        "forgetting "
                        f"{shown('forgetting (nats)', metrics.forgetting(L.values), '.4f', nats)}   ")
        final = shown("final PPL (geo-mean)", metrics.final_ppl_geomean(L.values), ".2f")
        lines.append(f"{transfer}final PPL (geo-mean) {final}")
        lines += [f"  {name}: - ({reason})" for name, reason in missing.items()]
    lines += _diagnostic_lines(rows)
    lines += _downstream_lines(rows, headline_metrics)
    return "\n".join(lines)


def _downstream_lines(rows: pd.DataFrame, headline_metrics: Mapping[str, str] | None) -> list[str]:
    """Each task's headline metric per stage it ran at, as ``value ± stderr`` (%), and the change
    from the first to the last of those stages with the standard error of the difference."""
    downstream = rows[rows["eval_kind"] == "lm_eval"]
    if downstream.empty:
        return []
    table = {}
    for task, task_rows in downstream.groupby("eval_name"):
        metric = headline_metric(task, task_rows["metric"], headline_metrics)
        by_stage = task_rows[task_rows["metric"] == metric].set_index("stage").sort_index()
        line = {"metric": metric, "items": int(by_stage["n"].iloc[-1])}
        for stage, score in by_stage.iterrows():
            line[f"stage {stage}"] = _pm(100 * score["value"], 100 * score["stderr"])
        if len(by_stage) > 1:
            first, last = by_stage.iloc[0], by_stage.iloc[-1]
            change, se = metrics.downstream_change(first["value"], last["value"], first["stderr"],
                                                   last["stderr"])
            line[f"change {by_stage.index[0]}->{by_stage.index[-1]}"] = _pm(100 * change, 100 * se,
                                                                             sign=True)
        table[task] = line
    frame = pd.DataFrame.from_dict(table, orient="index").fillna("-")
    frame.index.name = "task"
    return ["", "Downstream (lm-eval), each task by its headline metric, % (± = lm-eval's standard "
                "error over the task's items; of a change: both stages' errors combined as independent)",
            frame.to_string()]


def _pm(value: float, stderr: float, sign: bool = False) -> str:
    text = f"{value:+.2f}" if sign else f"{value:.2f}"
    return text if np.isnan(stderr) else f"{text} ± {stderr:.2f}"


def _diagnostic_lines(rows: pd.DataFrame) -> list[str]:
    summary = diagnostic_summary(rows)
    if not summary:
        return []
    if not summary["matrices changed"]:
        return ["", "Column-span diagnostic: no measured matrix changed"]
    roles = diagnostic_by_role(rows)
    text = roles.drop(columns=["matrices"]).rename(columns={"changed": "matrices"})
    for col in ("update size",):
        text[col] = text[col].map(lambda v: f"{v:.2e}")
    for col in ("outside col(W)", "random col", "outside row(W)", "random row"):
        text[col] = text[col].map(lambda v: "-" if np.isnan(v) else f"{v:.3f}")
    for col in ("rank r", "intruder dims", "k"):
        text[col] = text[col].map(lambda v: f"{v:.0f}")
    text["shape [out, in]"] = text["shape [out, in]"].fillna("-")
    unchanged = summary["matrices measured"] - summary["matrices changed"]
    return ["", f"Column-span diagnostic after stage {summary['stage']}, cumulative vs base, per "
                f"matrix role, over the {summary['matrices changed']} matrices that changed"
                f"{f' ({unchanged} measured did not)' if unchanged else ''}:",
            "  update size = |dW|/|W0| (mean); outside col(W) / row(W) = the update's energy outside "
            "W0's column / row span (mean),",
            "  beside a random-direction update's, (m-r)/m and (n-r)/n: where that is 0 the span is "
            "the whole space and no method can differ;",
            "  intruder dims = new directions among each matrix's top k singular vectors (sum)",
            text.to_string()]


def _validation_set_lines(rows: pd.DataFrame, domains: list[str]) -> list[str]:
    """Each domain's validation documents and tokens, and the noise floor of a PPL change on them
    (empty for runs that did not record per-document rows)."""
    documents = rows[rows["eval_kind"] == DOCUMENT_KIND]
    if documents.empty:
        return []
    last = int(documents["stage"].max())
    table = {}
    for domain in domains:
        mine = documents[documents["eval_name"] == domain]
        base, final = mine[mine["stage"] == 0], mine[mine["stage"] == last]
        table[domain] = {"documents": len(base), "tokens": int(base["n"].sum()),
                         "noise floor dPPL%": change_standard_error(base, final)}
    frame = pd.DataFrame(table).T
    frame[["documents", "tokens"]] = frame[["documents", "tokens"]].astype(int)
    return ["", f"Validation sets (noise floor: the standard error of the stage-{last} vs base "
                "dPPL% over which documents were drawn, paired bootstrap; a PPL change within about "
                "twice it is below the noise)",
            frame.round(2).to_string()]


def print_summary(rows: pd.DataFrame, domains: list[str],
                  headline_metrics: Mapping[str, str] | None = None) -> None:
    print(summary_text(rows, domains, headline_metrics))

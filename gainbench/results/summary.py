"""The one-screen summary printed at the end of a run: PPL matrix, in-domain and earlier-domain
changes, continual-learning metrics and downstream accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gainbench import metrics
from gainbench.results.run_metrics import diagnostic_summary


def summary_text(rows: pd.DataFrame, domains: list[str]) -> str:
    if rows.empty:
        return "(no finished stages)"
    run = rows.iloc[0]
    L = metrics.loss_matrix(rows, domains)
    lines = [f"== {run['model']} x {run['method']} x {run['sequence']} (seed {run['seed']}) =="]
    ppl = np.exp(L)
    ppl.index = [f"{s}: {'base' if s == 0 else domains[s - 1]}" for s in ppl.index]
    ppl.index.name = "after stage"
    lines += ["", "Validation perplexity (rows: after stage, columns: domain)",
              ppl.round(2).to_string()]
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
        earlier = metrics.earlier_domain_change_vs_base(L.values)
        lines.append("")
        transfer = ""
        if T > 1:  # a one-domain sequence has no earlier domain, so no transfer either
            lines.append(f"Earlier domains, final vs base: mean {earlier.mean():+.2f}%   "
                         f"vs just-trained: mean {metrics.earlier_domain_change_vs_trained(L.values).mean():+.2f}%")
            transfer = (f"BWT {metrics.backward_transfer(L.values):+.4f} nats (negative = forgetting)   "
                        f"FWT {metrics.forward_transfer(L.values):+.4f} nats   "
                        f"forgetting {metrics.forgetting(L.values):.4f} nats   ")
        lines += [f"{transfer}final PPL (geo-mean) {metrics.final_ppl_geomean(L.values):.2f}"]
    lines += _diagnostic_lines(rows)
    downstream = rows[rows["eval_kind"] == "lm_eval"]
    if not downstream.empty:
        acc = downstream.pivot_table(index="stage", columns=["eval_name", "metric"], values="value")
        lines += ["", "Downstream (lm-eval) accuracy per stage", acc.round(4).to_string()]
    return "\n".join(lines)


def _diagnostic_lines(rows: pd.DataFrame) -> list[str]:
    summary = diagnostic_summary(rows)
    if not summary:
        return []
    if not summary["matrices changed"]:
        return ["", "Column-span diagnostic: no measured matrix changed"]
    return ["", f"Column-span diagnostic after stage {summary['stage']}, cumulative vs base, over "
                f"the {summary['matrices changed']} of {summary['matrices measured']} measured "
                f"matrices that changed: update {summary['update size']:.2e} of |W| (mean), "
                f"energy outside col(W) {summary['update energy outside col(W)']:.3f}, outside "
                f"row(W) {summary['outside row(W)']:.3f}, intruder dimensions "
                f"{int(summary['intruder dims'])} in all"]


def print_summary(rows: pd.DataFrame, domains: list[str]) -> None:
    print(summary_text(rows, domains))

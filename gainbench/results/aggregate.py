"""Per-run metrics over seeds, as the per-method tables show them: the mean and a 95% interval
over the validation documents and the seeds (gainbench.results.intervals), or ``-`` with the
reason in the table's note (``DataFrame.attrs["notes"]``, which ``render`` prints after the note).

A metric some run of a variant lacks (a run with ``eval.cells=matched`` has no forgetting:
``run_metrics.unscored_metrics``) is ``-`` for the variant: never a mean over the seeds that have
it beside a ``seeds`` that counts them all, and never an interval without its document term
because the replicates are NaN (``combine`` drops those, as a matched comparison must).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gainbench.results.intervals import DocumentBootstrap, Interval, combine
from gainbench.results.run_metrics import RUN_METRICS, missing_note, run_metrics
from gainbench.results.runs import Run

CI = " ±"  # suffix of a column holding the 95% half-width of the column it follows


def with_notes(table: pd.DataFrame, notes) -> pd.DataFrame:
    """``table`` carrying ``notes`` (each once, in order), the lines ``render`` adds to its note."""
    notes = list(dict.fromkeys(n for n in notes if n))
    if notes:
        table.attrs["notes"] = notes
    return table


def _index(runs: list[Run]) -> list[str]:
    # The sequence joins the index only when runs of several sequences are read together.
    return ["model", "sequence", "method"] if len({r.sequence for r in runs}) > 1 else ["model", "method"]


def aggregate(runs: list[Run], names: list[str]) -> pd.DataFrame:
    """Mean and 95% half-width of ``run_metrics`` per (model, variant) over its finished runs,
    the interval over the validation documents and the seeds; ``seeds`` counts the finished runs
    (an unfinished one is listed only in the ``runs`` table)."""
    frame = pd.DataFrame([{"model": run.model, "sequence": run.sequence, "method": run.variant,
                           "seed": run.seed, **run_metrics(run)} for run in runs])
    index = _index(runs)
    out, notes = [], []
    for key, group in frame.groupby(index, sort=False):
        line = dict(zip(index, key if isinstance(key, tuple) else (key,)))
        rows = [i for i in group.index if runs[i].complete]
        finished = [runs[i] for i in rows]
        boot = DocumentBootstrap(finished)
        line["seeds"] = len(finished)
        if not finished:
            notes.append("- where no run of a method finished (seeds 0)")
        for name in names:
            values = frame.loc[rows, name].to_numpy(float)
            lacking = missing_note(name, finished, values)
            if lacking:
                notes.append(lacking)
                line[name], line[name + CI] = np.nan, np.nan
                continue
            # the document replicates of the seed mean, when every run recorded its documents
            reps = boot.replicates(RUN_METRICS[name]).mean(axis=1) if boot.available else None
            interval = combine(values, reps)
            if reps is not None and np.isnan(reps).any():   # combine would drop the documents
                notes.append(f"{name}: no ± where a document resample leaves it undefined")
                interval = Interval(interval.estimate)
            line[name], line[name + CI] = interval.estimate, interval.half_width
        out.append(line)
    return with_notes(pd.DataFrame(out).set_index(index), notes)

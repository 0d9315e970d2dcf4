"""What a run with eval.cells=matched lacks (forgetting, the full PPL matrix) is ``-`` in every
table and figure with the reason beside it, never a mean over the seeds that have it; an ``all``
and a ``matched`` run are two variants, and one point of a front."""

import io
import math

import numpy as np
import pandas as pd
import pytest

from gainbench.config.evaluation import scored_domains
from gainbench.results.aggregate import CI, aggregate
from gainbench.results.figures import ppl_change_heatmaps
from gainbench.results.front_figures import _point_labels
from gainbench.results.fronts import front_points, matched_comparison
from gainbench.results.render import render
from gainbench.results.runs import Run, label_variants, load_runs
from gainbench.results.tables import tables_of
from tests.results.conftest import write_runs

DOMAINS = ["d1", "d2", "d3"]     # T = 3: stage 1 leaves domain 3 unscored, so forgetting is missing
LRS = [1e-3, 2e-3, 4e-3]
DOCS, TOKENS = 8, 50
NOTE = "forgetting (nats): - for runs with eval.cells=matched, which do not score the cells it reads"


def _run(method, lr, seed, cells="all", forget=0.4):
    """A run whose per-document NLLs depend on (method, lr, seed) only, so a ``matched`` run holds
    exactly the cells of the ``all`` run of the same lr and seed; ``cells=None``: a run recorded
    before eval.cells existed."""
    rng = np.random.default_rng([LRS.index(lr), seed, ord(method[0])])
    T, adapt = len(DOMAINS), 0.05 * (LRS.index(lr) + 1)
    level = np.full((T + 1, T), 2.0)
    for k in range(1, T + 1):
        level[k] = level[k - 1] + forget * adapt * (np.arange(T) < k - 1)   # earlier domains forget
        level[k, k - 1] -= adapt                                           # its own domain adapts
    per_doc = level[:, :, None] + rng.normal(0, 0.02, size=(T + 1, T, DOCS))
    run_id = f"{method}-{lr}-{seed}-{cells}"
    rows = []
    for stage in range(T + 1):
        for j in scored_domains(cells or "all", stage, T):
            sums = per_doc[stage, j - 1] * TOKENS
            common = dict(run_id=run_id, model="toy", method=method, seed=seed, sequence="s",
                          stage=stage, stage_domain="base" if stage == 0 else DOMAINS[stage - 1],
                          eval_name=DOMAINS[j - 1], stderr=math.nan)
            rows.append({**common, "eval_kind": "ppl", "metric": "nll",
                         "value": sums.sum() / (TOKENS * DOCS), "n": TOKENS * DOCS})
            rows += [{**common, "eval_kind": "ppl_doc", "metric": "nll_sum", "value": s,
                      "n": TOKENS, "document": f"doc{d}"} for d, s in enumerate(sums)]
    config = {"model": {"name": "toy"}, "method": {"name": method, "lr": lr}, "seed": seed,
              "sequence": {"name": "s", "order": DOMAINS}, "train": {"lr": lr}}
    if cells:
        config["eval"] = {"cells": cells}
    return Run(path=None, meta={"config": config, "run_id": run_id,
                                "finished_stages": list(range(T + 1))}, rows=pd.DataFrame(rows))


def _labelled(runs):
    label_variants(runs)
    return runs


@pytest.fixture(scope="module")
def both():
    """Method a at one lr, three seeds, each with every cell scored and with the matched cells."""
    return _labelled([_run("a", 2e-3, seed, cells) for cells in ("all", "matched")
                      for seed in range(3)])


def test_a_matched_run_is_a_variant_of_its_own_and_an_older_run_is_all(tmp_path):
    runs = [_run("a", 2e-3, 0, "all"), _run("a", 2e-3, 0, "matched"), _run("b", 2e-3, 0, None),
            _run("b", 2e-3, 0, "all")]
    write_runs(runs, tmp_path)
    warn = io.StringIO()
    loaded = load_runs([tmp_path], warn=warn)
    assert sorted(r.variant for r in loaded) == ["a (cells=all)", "a (cells=matched)", "b"]
    # the run made before the key scored every cell: a repeat of the `all` run, not a variant
    assert "repeats" in warn.getvalue() and "a-" not in warn.getvalue()


def test_a_seed_mean_never_drops_the_seeds_that_lack_a_metric(both):
    # one group (unlabelled: variant "") in which one seed did not score what forgetting reads
    runs = [_run("a", 2e-3, 0), _run("a", 2e-3, 1), _run("a", 2e-3, 2, "matched")]
    table = aggregate(runs, ["BWT (nats)", "forgetting (nats)"])
    line = table.loc[("toy", "")]
    assert line["seeds"] == 3
    assert np.isnan(line["forgetting (nats)"]) and np.isnan(line["forgetting (nats)" + CI])
    assert table.attrs["notes"] == [NOTE]
    # BWT reads only matched cells: the mean of all three seeds, the ± over documents and seeds
    full = aggregate([r for r in both if r.cells == "all"], ["BWT (nats)"]).loc[("toy", "a (cells=all)")]
    assert np.isclose(line["BWT (nats)"], full["BWT (nats)"])
    assert np.isclose(line["BWT (nats)" + CI], full["BWT (nats)" + CI])


def test_the_transfer_table_prints_a_dash_and_says_why(both):
    (_, table), = tables_of(both, ["transfer"])["transfer"]
    assert np.isnan(table.loc[("toy", "a (cells=matched)"), "forgetting (nats)"])
    assert not np.isnan(table.loc[("toy", "a (cells=all)"), "forgetting (nats)"])
    for fmt in ("md", "latex"):
        text = render("transfer", [("", table)], fmt)
        assert "eval.cells=matched, which do not score the cells it reads" in text
    # every cell scored: the note is as it was
    (_, full), = tables_of([r for r in both if r.cells == "all"], ["transfer"])["transfer"]
    assert "notes" not in full.attrs and "eval.cells" not in render("transfer", [("", full)])


def test_the_ppl_matrix_and_runs_tables_say_what_was_not_scored(both):
    matrices = dict(tables_of(both, ["ppl_matrix"])["ppl_matrix"])
    for run in both:
        text = render("ppl_matrix", [(run.run_id, matrices[run.run_id])])
        assert ("- = not scored (eval.cells=matched)" in text) == (run.cells == "matched"), run.run_id
    text = render("runs", tables_of(both, ["runs"])["runs"])
    assert NOTE in text and "| nan" not in text.lower()


def test_the_heatmap_title_says_why_cells_are_grey(both):
    titles = {run.cells: fig.axes[0].get_title() for run in both[::3]
              for _, fig in ppl_change_heatmaps([run])}
    assert "not scored (eval.cells=matched)" in titles["matched"]
    assert "not scored" not in titles["all"]


def test_a_front_takes_an_all_and_a_matched_run_as_one_point():
    full = [_run(m, lr, s, "all", forget) for m, forget in (("a", 0.4), ("lora", 0.6))
            for lr in LRS for s in range(2)]
    matched = [_run("a", lr, s, "matched") for lr in LRS for s in range(2)]
    alone, together = (_labelled(list(runs)) for runs in (full, full + matched))
    points = front_points(together)
    assert points.groupby("method")["variant"].nunique().to_dict() == {"a": 3, "lora": 3}
    before, after = matched_comparison(alone), matched_comparison(together)
    assert not before["A - B"].isna().any()
    assert (before["points A"] == after["points A"]).all()
    for column in ("A - B", "lo", "hi"):
        assert np.allclose(before[column], after[column]), column
    # the trade-off figure labels a point by its learning rate, not by which cells it scored
    assert not any("cells" in label for label, _ in _point_labels(together).values())

"""eval.cells=matched: each stage scores only the cells the matched comparison reads; what it reads
comes out bit for bit as with every cell scored, and what needs a cell that was not scored
(forgetting) is missing, with its reason, never computed from part of the matrix."""

import numpy as np
import pandas as pd
import pytest

from gainbench import metrics
from gainbench.config.evaluation import scored_domains
from gainbench.protocol import run
from gainbench.results.fronts import front_points
from gainbench.results.intervals import DocumentBootstrap
from gainbench.results.run_metrics import RUN_METRICS, run_metrics, unscored_metrics
from gainbench.results.runs import load_run
from gainbench.results.summary import summary_text
from tests.conftest import compose_config

DOMAINS = ["kjv_bible", "icd10_medical", "python_code", "wiki_history"]
RUN = ["experiment=smoke", f"sequence.order=[{','.join(DOMAINS)}]", "eval.lm_eval.stages=none"]
# what the matched comparison reads (gainbench.results.fronts via run_metrics)
MATCHED_READS = ["in-domain dPPL%", "earlier dPPL% vs base", "earlier dPPL% vs just-trained"]


def _cells(T, cells="matched"):
    return {(k, j) for k in range(T + 1) for j in scored_domains(cells, k, T)}


def test_matched_scores_the_base_and_final_rows_the_diagonal_and_the_cell_before_it():
    assert len(_cells(8)) == 30 and len(_cells(8, "all")) == 72
    assert [list(scored_domains("matched", k, 8)) for k in range(9)] == [
        list(range(1, 9)), [1, 2], [2, 3], [3, 4], [4, 5], [5, 6], [6, 7], [7, 8], list(range(1, 9))]
    assert all(len(_cells(T)) == 4 * T - 2 for T in range(1, 12))
    # every cell the comparison's metrics read is scored (the probe of run_metrics, inverted)
    for T in (1, 2, 3, 8):
        L = np.full((T + 1, T), np.nan)
        for k, j in _cells(T):
            L[k, j - 1] = 1.0
        assert set(unscored_metrics(L)) <= {"forgetting (nats)"}
        assert ("forgetting (nats)" in unscored_metrics(L)) == (T > 2)


def test_a_metric_that_reads_an_unscored_cell_is_missing_with_its_reason():
    L = np.arange(20, dtype=float).reshape(5, 4) / 10
    assert unscored_metrics(L) == {}
    L[1, 0] = np.nan    # the diagonal of stage 1
    missing = unscored_metrics(L)
    assert set(missing) == {"in-domain dPPL%", "earlier dPPL% vs just-trained", "BWT (nats)",
                            "forgetting (nats)"}
    assert "domain 1 after stage 1" in missing["in-domain dPPL%"]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same run (same seed) with every cell scored and with the matched cells only."""
    folder = tmp_path_factory.mktemp("cells")
    return {cells: load_run(run(compose_config([*RUN, f"results_dir={folder}",
                                                f"eval.cells={cells}"])))
            for cells in ("all", "matched")}


def test_a_matched_run_holds_exactly_the_matched_cells(both):
    T = len(DOMAINS)
    for kind in ("ppl", "ppl_doc"):
        rows = both["matched"].rows.query("eval_kind == @kind")
        got = {(int(s), DOMAINS.index(d) + 1) for s, d in zip(rows.stage, rows.eval_name)}
        assert got == _cells(T), kind
    full = both["all"].rows.query("eval_kind == 'ppl'")
    assert len(full) == 3 * T * (T + 1)
    assert both["matched"].run_id != both["all"].run_id   # the rows differ: another run id


def test_the_comparison_s_numbers_are_those_of_the_full_matrix_to_the_bit(both):
    full, matched = (run_metrics(both[c]) for c in ("all", "matched"))
    for name in [*MATCHED_READS, "BWT (nats)", "FWT (nats)", "final PPL (geo-mean)"]:
        assert np.float64(full[name]).tobytes() == np.float64(matched[name]).tobytes(), name
    assert np.isnan(matched["forgetting (nats)"]) and not np.isnan(full["forgetting (nats)"])
    # the fronts' points and the document bootstrap behind the matched table's intervals
    points = front_points([both["all"], both["matched"]])
    assert points["gain"].iloc[0] == points["gain"].iloc[1]
    replicates = [DocumentBootstrap([both[c]], n_boot=50).replicates(RUN_METRICS[name])
                  for c in ("all", "matched") for name in MATCHED_READS]
    for a, b in zip(replicates[:3], replicates[3:]):
        assert np.array_equal(a, b)


def test_the_summary_shows_what_was_not_scored_as_missing(both):
    run_ = both["matched"]
    text = summary_text(run_.rows, DOMAINS)
    ppl = text.split("Validation perplexity")[1].split("\n\n")[0]
    assert "NaN" not in ppl and "nan" not in text
    assert "-: not scored; eval.cells=matched" in ppl
    assert "forgetting -   final PPL" in text
    assert "forgetting (nats): - (reads" in text
    # the full run's summary shows every number
    assert "not scored" not in summary_text(both["all"].rows, DOMAINS)
    L = metrics.loss_matrix(run_.rows, DOMAINS)
    assert int(L.isna().to_numpy().sum()) == len(DOMAINS) * (len(DOMAINS) + 1) - len(_cells(4))
    assert isinstance(L, pd.DataFrame)

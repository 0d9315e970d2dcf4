"""The intervals cover what they say: synthetic runs with a planted null and a planted effect
(tests/results/conftest.py, ``synthetic_study``). The fronts of A and B are the same function
under the null and differ by a known amount under the effect.
"""

import math

import numpy as np
import pandas as pd
import pytest

from gainbench.results import intervals
from gainbench.results.fronts import matched_comparison, matched_values
from gainbench.results.intervals import DocumentBootstrap, combine
from tests.results.conftest import planted_change, synthetic_study


def test_resampled_loss_matrices_centre_on_the_pooled_ones():
    runs = synthetic_study(np.random.default_rng(0), effect=0.0)[:2]
    boot = DocumentBootstrap(runs, n_boot=400)
    assert boot.available and boot.loss_matrices().shape == (400, 2, 3, 2)
    pooled = np.stack([run.loss_matrix.to_numpy() for run in runs])
    np.testing.assert_allclose(boot.loss_matrices().mean(axis=0), pooled, atol=2e-3)
    # the same documents are drawn for both runs: their difference varies less than either
    spread = boot.loss_matrices()[:, :, 2, 0].std(axis=0)
    assert (spread > 0).all()


def test_runs_without_document_rows_say_so():
    runs = synthetic_study(np.random.default_rng(0), effect=0.0)
    runs[0].rows = runs[0].rows[runs[0].rows.eval_kind == "ppl"]
    boot = DocumentBootstrap(runs)
    assert not boot.available and boot.reason == "runs without per-document rows"


def test_combine_adds_documents_and_seeds_and_says_what_it_covers():
    with_docs = combine(np.array([1.0, 2.0, 3.0]), doc_replicates=np.random.default_rng(0).normal(2, 1, 500))
    seeds_only = combine(np.array([1.0, 2.0, 3.0]))
    assert with_docs.covers == "validation documents (paired bootstrap) and 3 seeds (Student-t)"
    assert seeds_only.covers == "3 seeds (Student-t)"
    assert with_docs.half_width > seeds_only.half_width
    one_seed = combine(np.array([2.0]))
    assert math.isnan(one_seed.lo) and one_seed.reason == "one seed"


def _matched(runs, at):
    table = matched_comparison(runs, reference_method="a", at=at)
    return table[table["earlier change"] == "vs base"].iloc[0]


@pytest.mark.slow
def test_coverage_of_the_matched_comparison_under_a_planted_null_and_effect(monkeypatch):
    monkeypatch.setattr(intervals, "N_BOOT", 200)
    rng = np.random.default_rng(12345)
    replicates, at = 200, 10.0   # % in-domain gain, mid-front (the fronts span about 5 .. 14%)
    null_covered, refused, effect_found = 0, 0, 0
    for _ in range(replicates):
        row = _matched(synthetic_study(rng, effect=0.0), at)
        if np.isnan(row["lo"]):
            # a seed's noisiest run beaten on every axis by a lower rate leaves the front
            # (fronts.useful_range), which can end it near the target: no interval, counted
            # as not covering
            refused += 1
            continue
        assert row["covers"] == ("validation documents (paired bootstrap) and 3 seeds (Student-t) "
                                 "and interpolation (allowance)")
        null_covered += row["lo"] <= 0 <= row["hi"]
    assert refused <= 0.02 * replicates, f"no interval in {refused} of {replicates}"
    for _ in range(20):
        # b forgets domain 1 by +0.15 nats (+16% PPL), about three half-widths of the interval
        row = _matched(synthetic_study(rng, effect=0.15), at)
        effect_found += row["lo"] > 0
    assert null_covered >= 0.9 * replicates, f"null covered in {null_covered} of {replicates}"
    assert effect_found >= 18, f"planted effect found in {effect_found} of 20"


def test_the_noise_floor_of_a_change_is_zero_without_one_and_grows_with_document_spread():
    from gainbench.results.intervals import change_standard_error

    before = pd.DataFrame({"document": [f"d{i}" for i in range(30)], "value": 100.0, "n": 50})
    assert change_standard_error(before, before) == 0.0
    rng = np.random.default_rng(0)
    small = before.assign(value=100.0 + rng.normal(0, 1, 30))
    large = before.assign(value=100.0 + rng.normal(0, 5, 30))
    assert 0 < change_standard_error(before, small) < change_standard_error(before, large)
    # about the textbook value: sd of the per-document change in nats/token / sqrt(30), in %
    expected = 100 * (large["value"] - 100).std() / 50 / np.sqrt(30)
    assert change_standard_error(before, large) == pytest.approx(expected, rel=0.2)


def test_coverage_of_one_method_s_value_at_a_planted_front(monkeypatch):
    # One method's own value (not a difference): its interval covers the noise-free front at the
    # target in at least 90% of the studies, for both references, and is not trivially wide.
    monkeypatch.setattr(intervals, "N_BOOT", 100)
    rng = np.random.default_rng(2024)
    replicates, at = 40, 10.0
    covered, half_widths = {"vs base": 0, "vs just-trained": 0}, []
    for _ in range(replicates):
        for _, row in matched_values(synthetic_study(rng, methods=("a",)), at=[at]).iterrows():
            assert row["covers"] == ("validation documents (paired bootstrap) and 3 seeds "
                                     "(Student-t) and interpolation (allowance)")
            planted = planted_change(at, row["earlier change"])
            covered[row["earlier change"]] += row["lo"] <= planted <= row["hi"]
            half_widths.append((row["hi"] - row["lo"]) / 2)
    for reference, n in covered.items():
        assert n >= 0.9 * replicates, f"{reference}: planted value covered in {n} of {replicates}"
    assert np.median(half_widths) < 6.0   # percentage points: the front is -6.1% vs base

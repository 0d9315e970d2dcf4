"""Metric formulas on a hand-computed loss matrix (T = 3 domains; row 0 = base model)."""

import math

import numpy as np
import pandas as pd
import pytest

from gainbench import metrics

# L[k][j]: NLL of domain j+1 after stage k
L = np.array([
    [2.0, 3.0, 4.0],   # base
    [1.5, 3.1, 3.9],   # after stage 1 (domain 1 trained)
    [1.7, 2.5, 3.8],   # after stage 2
    [1.9, 2.6, 3.0],   # after stage 3
])


def pct(d):
    return 100 * (math.exp(d) - 1)


def test_in_domain_change():
    expected = [pct(1.5 - 2.0), pct(2.5 - 3.1), pct(3.0 - 3.8)]
    np.testing.assert_allclose(metrics.in_domain_change(L), expected)


def test_earlier_domain_change_vs_base_and_vs_trained():
    np.testing.assert_allclose(metrics.earlier_domain_change_vs_base(L),
                               [pct(1.9 - 2.0), pct(2.6 - 3.0)])
    np.testing.assert_allclose(metrics.earlier_domain_change_vs_trained(L),
                               [pct(1.9 - 1.5), pct(2.6 - 2.5)])


def test_backward_transfer_negative_means_forgetting():
    assert metrics.backward_transfer(L) == pytest.approx(((1.5 - 1.9) + (2.5 - 2.6)) / 2)
    assert metrics.backward_transfer(L) < 0


def test_forward_transfer():
    # j = 2: L[0][2] - L[1][2] = 3.0 - 3.1 ; j = 3: L[0][3] - L[2][3] = 4.0 - 3.8
    assert metrics.forward_transfer(L) == pytest.approx(((3.0 - 3.1) + (4.0 - 3.8)) / 2)


def test_forgetting_uses_the_best_earlier_loss_including_base():
    # domain 1: 1.9 - min(2.0, 1.5, 1.7) = 0.4 ; domain 2: 2.6 - min(3.0, 3.1, 2.5) = 0.1
    assert metrics.forgetting(L) == pytest.approx((0.4 + 0.1) / 2)


def test_final_ppl_geomean():
    assert metrics.final_ppl_geomean(L) == pytest.approx(math.exp((1.9 + 2.6 + 3.0) / 3))


def test_no_change_gives_zero_everywhere():
    flat = np.full((4, 3), 2.0)
    assert np.all(metrics.in_domain_change(flat) == 0)
    assert metrics.backward_transfer(flat) == metrics.forgetting(flat) == 0


def test_shape_is_checked():
    with pytest.raises(ValueError, match=r"\(T\+1, T\)"):
        metrics.in_domain_change(np.zeros((3, 3)))


def test_loss_matrix_from_tidy_rows_in_sequence_order():
    domains = ["b", "a", "c"]  # sequence order differs from alphabetical
    rows = pd.DataFrame([
        dict(stage=k, stage_domain="base" if k == 0 else domains[k - 1], eval_kind="ppl",
             eval_name=d, metric="nll", value=L[k, j])
        for k in range(4) for j, d in enumerate(domains)
    ])
    matrix = metrics.loss_matrix(rows)
    assert list(matrix.columns) == domains
    np.testing.assert_allclose(matrix.values, L)


def test_downstream_change_and_its_standard_error():
    change, se = metrics.downstream_change(0.50, 0.62, 0.03, 0.04)
    assert change == pytest.approx(0.12) and se == pytest.approx(0.05)  # 3-4-5


def test_mean_ci_student_t_over_seeds():
    mean, half, n = metrics.mean_ci([1.0, 2.0, 3.0])
    # t(0.975, 2 dof) = 4.302653; std (ddof 1) = 1; / sqrt(3)
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)


def test_mean_ci_one_seed_has_no_interval_and_missing_values_are_dropped():
    mean, half, n = metrics.mean_ci([float("nan"), 5.0])
    assert (mean, n) == (5.0, 1) and math.isnan(half)
    assert metrics.mean_ci([])[2] == 0


def test_every_metric_takes_a_stack_of_matrices_as_the_bootstrap_makes():
    rng = np.random.default_rng(0)
    stack = rng.normal(2.0, 0.1, (5, 5, 4))
    for metric in (metrics.in_domain_change, metrics.earlier_domain_change_vs_base,
                   metrics.earlier_domain_change_vs_trained, metrics.backward_transfer,
                   metrics.forward_transfer, metrics.forgetting, metrics.final_ppl_geomean):
        one_by_one = np.array([metric(matrix) for matrix in stack])
        np.testing.assert_allclose(metric(stack), one_by_one, rtol=1e-12, err_msg=metric.__name__)

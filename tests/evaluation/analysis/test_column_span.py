"""Span residuals and intruder dimensions on hand-built matrices with known answers."""

import pytest
import torch

from gainbench.evaluation.analysis.column_span import (diagnose, intruder_dimensions, random_residual,
                                                       span_residual)

TOL = 1e-5



def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def rank4():
    """8x8 of rank 4, and an orthonormal basis of its column span (first 4) and complement (last 4)."""
    g = _gen()
    left, right = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(4, 8, generator=g,
                                                                               dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.cat([left, torch.randn(8, 4, generator=g, dtype=torch.float64)], 1))
    s = torch.rand(8, generator=g, dtype=torch.float64) + 0.5   # GAIN scales in [0.5, 1.5)
    return left @ right, q[:, :4], q[:, 4:], s


def test_input_side_scaling_keeps_column_span_not_row_span(rank4):
    w0, _, _, s = rank4
    w1 = w0 * s[None, :]                       # W0 diag(s)
    assert span_residual(w0, w1, side="column") < TOL
    assert span_residual(w0, w1, side="row") > 1e-3


def test_output_side_scaling_keeps_row_span_not_column_span(rank4):
    w0, _, _, s = rank4
    w1 = s[:, None] * w0                       # diag(s) W0
    assert span_residual(w0, w1, side="row") < TOL
    assert span_residual(w0, w1, side="column") > 1e-3


def test_additive_update_outside_or_inside_column_span(rank4):
    w0, inside, outside, _ = rank4
    g = _gen(1)
    a = torch.randn(2, 8, generator=g, dtype=torch.float64)
    b_out = outside @ torch.randn(4, 2, generator=g, dtype=torch.float64)
    b_in = inside @ torch.randn(4, 2, generator=g, dtype=torch.float64)
    assert span_residual(w0, w0 + b_out @ a) == pytest.approx(1.0, abs=TOL)
    assert span_residual(w0, w0 + b_in @ a) < TOL
    assert span_residual(w0, w0) == 0.0        # no update: nothing outside


def _spectrum_64():
    """64x64 W0 = Q1 diag(sigma) Q2^T with distinct sigma, and a unit vector u with |cos| = 1/8 to
    every left singular vector of W0."""
    g = _gen(2)
    q1, _ = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))
    w0 = q1 @ torch.diag(torch.linspace(10, 1, 64, dtype=torch.float64)) @ q2.T
    u = q1 @ torch.full((64,), 1 / 8, dtype=torch.float64)
    v = torch.randn(64, generator=g, dtype=torch.float64)
    return w0, u, v / v.norm()


def test_intruder_dimensions():
    w0, u, v = _spectrum_64()
    assert intruder_dimensions(w0, w0 + 30 * torch.outer(u, v), k=16) == 1
    assert intruder_dimensions(w0, 1.1 * w0, k=16) == 0
    # full rank and square: every span residual is trivially 0, intruders still see the new direction
    assert span_residual(w0, w0 + 30 * torch.outer(u, v)) < TOL


def test_conv1d_layout_matches_transposed_linear(rank4):
    w0, _, outside, s = rank4
    w1 = s[:, None] * w0 + outside[:, :1] @ torch.ones(1, 8, dtype=torch.float64)
    linear = diagnose({"m": w0}, {"m": w1})
    conv = diagnose({"m": w0.T}, {"m": w1.T}, {"m": "conv1d"})
    assert [r["metric"] for r in linear] == ["span_residual_column", "span_residual_row",
                                             "intruder_dims", "update_rel_norm",
                                             "span_residual_column_random", "span_residual_row_random"]
    for a, b in zip(linear, conv):
        assert a["eval_kind"] == "diagnostic" and a["eval_name"] == "m" and a["n"] == b["n"]
        assert a["value"] == pytest.approx(b["value"], abs=TOL)
    by_metric = {r["metric"]: r for r in linear}
    assert by_metric["span_residual_column"]["n"] == 4          # numerical rank of W0
    assert span_residual(w0.T, w1.T, layout="conv1d", side="row") == pytest.approx(
        by_metric["span_residual_row"]["value"], abs=TOL)


def test_random_direction_baseline_on_a_hand_made_matrix():
    """W0 = [I_3 0; 0 0] padded to 6 x 10 (rank 3): a Gaussian update has on average (6-3)/6 of its
    energy outside col(W0) and (10-3)/10 outside row(W0); diagnose records both with W0's shape."""
    w0 = torch.zeros(6, 10, dtype=torch.float64)
    w0[:3, :3] = torch.eye(3, dtype=torch.float64)
    assert random_residual(6, 3) == 0.5 and random_residual(10, 3) == 0.7
    assert random_residual(576, 192) == pytest.approx(0.6667, abs=1e-4)   # SmolLM2 v_proj rows
    assert random_residual(8, 8) == 0.0      # full rank on that side: nothing can lie outside
    g = _gen(5)
    draws = [w0 + torch.randn(6, 10, generator=g, dtype=torch.float64) for _ in range(2000)]
    for side, expected in (("column", 0.5), ("row", 0.7)):
        mean = sum(span_residual(w0, w1, side=side) for w1 in draws) / len(draws)
        assert mean == pytest.approx(expected, abs=0.01), side
    rows = {r["metric"]: r for r in diagnose({"m": w0}, {"m": draws[0]})}
    assert rows["span_residual_column_random"]["value"] == 0.5
    assert rows["span_residual_column_random"]["n"] == 6     # out
    assert rows["span_residual_row_random"]["value"] == pytest.approx(0.7)
    assert rows["span_residual_row_random"]["n"] == 10       # in
    assert rows["span_residual_column"]["n"] == 3            # rank
    # the conv1d layout ([in, out]) gives the [out, in] shape too
    conv = {r["metric"]: r for r in diagnose({"m": w0.T}, {"m": draws[0].T}, {"m": "conv1d"})}
    assert conv["span_residual_column_random"]["n"] == 6 and conv["span_residual_row_random"]["n"] == 10
    with pytest.raises(ValueError):
        random_residual(4, 5)


def test_randomised_path_agrees_with_exact():
    g = _gen(3)
    w0 = torch.randn(300, 20, generator=g) @ torch.randn(20, 200, generator=g)   # rank 20
    s = torch.rand(300, generator=g) + 0.5
    w1 = s[:, None] * w0 + 3 * torch.randn(300, 1, generator=g) @ torch.randn(1, 200, generator=g)
    exact = diagnose({"m": w0}, {"m": w1}, k=8)
    approx = diagnose({"m": w0}, {"m": w1}, k=8, exact_max_dim=64, max_rank=20)
    for a, b in zip(exact, approx):
        assert a["metric"] == b["metric"] and a["n"] == b["n"]
        assert a["value"] == pytest.approx(b["value"], abs=1e-3), a["metric"]
    assert {r["metric"]: r["value"] for r in approx}["intruder_dims"] == 1   # the rank-1 additive part
    assert span_residual(w0, w1, rank=10) == pytest.approx(
        span_residual(w0, w1, rank=10, exact_max_dim=64), abs=1e-3)


@pytest.mark.parametrize("side", ["output", "input"])
def test_absorbed_gain_on_tiny_model(tiny_model, side):
    """End to end: output-side GAIN leaves every row span exactly, input-side every column span."""
    from gainbench.evaluation.analysis.column_span import snapshot_weights
    from gainbench.methods.gain import absorb_gain, apply_gain

    targets = ["attn_out", "ffn_down"]
    before, layout = snapshot_weights(tiny_model, targets)
    g = _gen(4)
    with torch.no_grad():
        for scale in apply_gain(tiny_model, targets, side=side).values():
            scale.copy_(torch.rand(scale.shape, generator=g) + 0.5)
    absorb_gain(tiny_model)
    after, _ = snapshot_weights(tiny_model, targets, clone=False)
    rows = diagnose(before, after, layout)
    kept = "span_residual_row" if side == "output" else "span_residual_column"
    assert {r["eval_name"] for r in rows} == set(before)
    assert all(r["value"] < 1e-4 for r in rows if r["metric"] == kept)
    assert all(r["value"] > 0.01 for r in rows if r["metric"] == "update_rel_norm")

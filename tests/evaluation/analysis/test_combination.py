"""Combining two updates (Figure 4): additive grid for plain deltas, multiplicative grid for GAIN."""

import copy

import pytest
import torch

from gainbench.evaluation.analysis.combination import (combine_gain_scales, combine_grid, gain_grid,
                                            scales_from_stage_state, task_vector)
from gainbench.evaluation.analysis.interpolation import snapshot
from gainbench.evaluation.perplexity import validation_nll
from gainbench.methods import make_method
from gainbench.methods.gain import absorb_gain, apply_gain, gain_modules

TARGETS = ["attn_out", "ffn_down"]


def _nll(model, blocks):
    return validation_nll(model, blocks, n_bytes=100).nll


def _evaluate(blocks):
    return lambda model: [{"eval_kind": "ppl", "eval_name": "d", "metric": "nll",
                           "value": _nll(model, blocks), "n": blocks.numel()}]


def _load(model, state):
    live = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, value in state.items():
            live[name].copy_(value)


def _assert_state_equal(model, state):
    live = model.state_dict()
    for name, value in state.items():
        assert torch.equal(live[name], value), name


def _by_point(rows):
    return {(r["a"], r["b"]): r["value"] for r in rows}


def test_additive_grid_corners(tiny_model, token_batch):
    base_all = snapshot(tiny_model)
    g = torch.Generator().manual_seed(0)
    # Two overlapping "stages": A moves layer-0 and layer-1 weights, B only layer-1 weights.
    names_a = [n for n in base_all if (".0." in n or ".1." in n) and n.endswith("weight")]
    names_b = [n for n in names_a if ".1." in n]
    after_a = {n: base_all[n] + 0.05 * torch.randn(base_all[n].shape, generator=g) for n in names_a}
    after_b = {n: base_all[n] + 0.05 * torch.randn(base_all[n].shape, generator=g) for n in names_b}
    base = {n: base_all[n] for n in names_a}
    delta_a, delta_b = task_vector(base, after_a), task_vector(base, after_b)

    nll_base = _nll(tiny_model, token_batch)
    _load(tiny_model, after_a)
    nll_a = _nll(tiny_model, token_batch)
    _load(tiny_model, base)
    _load(tiny_model, after_b)
    nll_b = _nll(tiny_model, token_batch)
    _load(tiny_model, base)

    rows = combine_grid(tiny_model, base, delta_a, delta_b, [0, 1], [0, 1], _evaluate(token_batch))
    assert [(r["a"], r["b"]) for r in rows] == [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]
    got = _by_point(rows)
    assert got[(0.0, 0.0)] == nll_base                            # exactly the base weights
    assert got[(1.0, 0.0)] == pytest.approx(nll_a, rel=1e-6)      # only A applied
    assert got[(0.0, 1.0)] == pytest.approx(nll_b, rel=1e-6)      # only B applied
    assert got[(1.0, 1.0)] not in (pytest.approx(nll_a), pytest.approx(nll_b))
    _assert_state_equal(tiny_model, base_all)


def test_additive_grid_restores_base_on_exception(tiny_model):
    base_all = snapshot(tiny_model)
    name = next(n for n in base_all if n.endswith("weight") and ".0." in n)
    base = {name: base_all[name]}

    def evaluate(model):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        combine_grid(tiny_model, base, {name: torch.ones_like(base[name])}, {}, [1.0], [0.0], evaluate)
    _assert_state_equal(tiny_model, base_all)
    with pytest.raises(KeyError, match="missing from base"):
        combine_grid(tiny_model, {}, {name: base[name]}, {}, [1.0], [0.0], evaluate)


def test_combine_gain_scales():
    s_a, s_b = torch.tensor([0.5, 2.0, 1.5]), torch.tensor([4.0, 0.25, 1.0])
    assert torch.equal(combine_gain_scales(s_a, s_b, 0, 0), torch.ones(3))
    assert torch.equal(combine_gain_scales(s_a, s_b, 1, 1), s_a * s_b)
    torch.testing.assert_close(combine_gain_scales(s_a, s_b, 2, -1), s_a ** 2 / s_b)
    # half of A, twice: A
    torch.testing.assert_close(combine_gain_scales(s_a, s_b, 0.5, 0) ** 2, s_a)
    assert torch.equal(combine_gain_scales(-s_a, s_b, 1, 0), -s_a)          # integer power: fine
    with pytest.raises(ValueError, match="non-positive"):
        combine_gain_scales(-s_a, s_b, 0.5, 0)


def _wrapped_copy(model):
    """A deep copy with GAIN attached: to read the module names and scale shapes."""
    probe = copy.deepcopy(model)
    apply_gain(probe, TARGETS)
    return probe


def _random_scales(names, shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return {n: 0.5 + torch.rand(shapes[n], generator=g) for n in names}


def _absorb(model, scales):
    """One GAIN stage with the given scales: attach (s = 1), set s, absorb."""
    params = apply_gain(model, TARGETS)
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(scales[name])
    absorb_gain(model)


def test_gain_grid_matches_sequential_absorption(tiny_model, token_batch):
    """(1, 1) = absorb A then B; (1, 0) = A only; (0, 0) = base. Linear, and GPT-2 Conv1D with bias."""
    base_all = snapshot(tiny_model)
    shapes = {n: m.param.shape for n, m in gain_modules(_wrapped_copy(tiny_model)).items()}
    modules = sorted(shapes)
    base = {k: base_all[k] for m in modules for k in (f"{m}.weight", f"{m}.bias") if k in base_all}
    s_a, s_b = _random_scales(modules, shapes, 1), _random_scales(modules, shapes, 2)

    nll_base = _nll(tiny_model, token_batch)
    _absorb(tiny_model, s_a)
    nll_a = _nll(tiny_model, token_batch)
    _absorb(tiny_model, s_b)
    nll_ab = _nll(tiny_model, token_batch)
    weights_ab = snapshot(tiny_model, base)
    _load(tiny_model, base)

    seen = []

    def evaluate(model):
        seen.append(snapshot(model, base))
        return _evaluate(token_batch)(model)

    rows = gain_grid(tiny_model, base, s_a, s_b, [0, 1], [0, 1], evaluate)
    got = _by_point(rows)
    assert got[(0.0, 0.0)] == nll_base
    assert got[(1.0, 0.0)] == pytest.approx(nll_a, rel=1e-6)
    assert got[(1.0, 1.0)] == pytest.approx(nll_ab, rel=1e-6)
    for name, value in weights_ab.items():           # point (1, 1) is the 4th evaluated
        torch.testing.assert_close(seen[3][name], value, rtol=1e-6, atol=1e-7)
    _assert_state_equal(tiny_model, base_all)


def test_gain_grid_conv1d_layout_is_columns(tiny_model):
    """Explicit layout must agree with the one read from the modules (GPT-2 Conv1D: [in, out])."""
    modules = sorted(gain_modules(_wrapped_copy(tiny_model)))
    base_all = snapshot(tiny_model)
    base = {k: base_all[k] for m in modules for k in (f"{m}.weight", f"{m}.bias") if k in base_all}
    is_gpt2 = tiny_model.config.model_type == "gpt2"
    layout = "conv1d" if is_gpt2 else "linear"
    out_dim = 1 if is_gpt2 else 0
    scales = {m: torch.linspace(0.5, 1.5, base[f"{m}.weight"].shape[out_dim]) for m in modules}
    seen = []
    gain_grid(tiny_model, base, scales, {}, [1.0], [0.0],
              lambda model: seen.append(snapshot(model, base)) or [], layout=layout)
    m = modules[0]
    shape = [1, 1]
    shape[out_dim] = -1
    torch.testing.assert_close(seen[0][f"{m}.weight"], base[f"{m}.weight"] * scales[m].view(shape))
    if f"{m}.bias" in base:
        torch.testing.assert_close(seen[0][f"{m}.bias"], base[f"{m}.bias"] * scales[m])


def test_scales_from_stage_state():
    plain = {"a.b.scale": torch.tensor([2.0, 0.5])}
    assert torch.equal(scales_from_stage_state(plain)["a.b"], torch.tensor([2.0, 0.5]))
    log = {"a.b.log_scale": torch.tensor([0.0, 1.0])}
    torch.testing.assert_close(scales_from_stage_state(log)["a.b"], torch.tensor([1.0, torch.e]))
    with pytest.raises(KeyError):
        scales_from_stage_state({"a.b.lora_A": torch.zeros(1)})


def test_scales_from_gain_method_state(tiny_model):
    method = make_method("gain_ffn", parametrization="exp")
    model = method.attach(tiny_model)
    with torch.no_grad():
        for p in method.trainable_parameters(model).values():
            p.fill_(0.1)
    scales = scales_from_stage_state(method.stage_state(model))
    assert set(scales) == set(gain_modules(model))
    assert all(torch.allclose(s, torch.full_like(s, 1.1051709)) for s in scales.values())

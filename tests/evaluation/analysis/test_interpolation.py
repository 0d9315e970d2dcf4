"""Weight interpolation (Figure 3): exact endpoints, weights restored, for full FT and absorbed GAIN."""

import pytest
import torch

from gainbench.evaluation.analysis.interpolation import changed_tensors, interpolate, snapshot
from gainbench.evaluation.perplexity import validation_nll
from gainbench.methods.gain import absorb_gain, apply_gain, gain_modules


def nll_rows(blocks):
    def evaluate(model):
        r = validation_nll(model, blocks, n_bytes=100)
        return [{"eval_kind": "ppl", "eval_name": "d", "metric": "nll", "value": r.nll, "n": r.n_tokens}]
    return evaluate


def _perturb_blocks(model, seed=0, scale=0.05):
    """A stand-in for full fine-tuning: noise on every weight inside the decoder blocks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".0." in name or ".1." in name:
                p.add_(scale * torch.randn(p.shape, generator=g))


def _assert_state_equal(model, state):
    live = model.state_dict()
    for name, value in state.items():
        assert torch.equal(live[name], value), name


def test_endpoints_reproduce_before_and_after_and_weights_are_restored(tiny_model, token_batch):
    evaluate = nll_rows(token_batch)
    before_all = snapshot(tiny_model)
    nll_before = evaluate(tiny_model)[0]["value"]
    _perturb_blocks(tiny_model)
    after_all = snapshot(tiny_model)
    nll_after = evaluate(tiny_model)[0]["value"]
    names = changed_tensors(before_all, after_all)
    assert names and all(".0." in n or ".1." in n for n in names)
    before, after = {n: before_all[n] for n in names}, {n: after_all[n] for n in names}

    rows = interpolate(tiny_model, before, after, [0.0, 0.5, 1.0], evaluate)
    by_alpha = {r["alpha"]: r["value"] for r in rows}
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    assert rows[0]["metric"] == "nll" and rows[0]["n"] == 4 * 31
    assert by_alpha[0.0] == pytest.approx(nll_before, rel=1e-7)
    assert by_alpha[1.0] == pytest.approx(nll_after, rel=1e-7)
    assert by_alpha[0.5] not in (pytest.approx(nll_before), pytest.approx(nll_after))
    _assert_state_equal(tiny_model, after_all)


def test_absorbed_gain_changes_only_its_targets(tiny_model, token_batch):
    """Once absorbed, GAIN is plain weights: the changed tensors are its targets' weights (and biases)."""
    before_all = snapshot(tiny_model)
    nll_before = nll_rows(token_batch)(tiny_model)[0]["value"]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in apply_gain(tiny_model, ["attn_out", "ffn_down"]).values():
            p.copy_(0.5 + torch.rand(p.shape, generator=g))
    targets = sorted(gain_modules(tiny_model))
    absorb_gain(tiny_model)
    after_all = snapshot(tiny_model)
    names = changed_tensors(before_all, after_all)
    assert {n.rpartition(".")[0] for n in names} == set(targets)
    assert all(n.endswith((".weight", ".bias")) for n in names)

    rows = interpolate(tiny_model, {n: before_all[n] for n in names}, {n: after_all[n] for n in names},
                       [0.0, 1.0], nll_rows(token_batch))
    assert rows[0]["value"] == pytest.approx(nll_before, rel=1e-7)
    _assert_state_equal(tiny_model, after_all)


def test_weights_restored_when_evaluate_raises(tiny_model):
    before_all = snapshot(tiny_model)
    _perturb_blocks(tiny_model)
    after_all = snapshot(tiny_model)
    names = changed_tensors(before_all, after_all)
    calls = []

    def evaluate(model):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return []

    with pytest.raises(RuntimeError, match="boom"):
        interpolate(tiny_model, {n: before_all[n] for n in names}, {n: after_all[n] for n in names},
                    [0.0, 0.3, 1.0], evaluate)
    _assert_state_equal(tiny_model, after_all)


def test_changed_tensors_and_argument_checks(tiny_model):
    state = snapshot(tiny_model)
    assert changed_tensors(state, snapshot(tiny_model)) == []
    name = next(iter(state))
    other = dict(state, **{name: state[name] + 1})
    assert changed_tensors(state, other) == [name]
    with pytest.raises(ValueError, match="shape changed"):
        changed_tensors(state, {name: state[name].flatten()[:3]})
    with pytest.raises(ValueError, match="same tensors"):
        interpolate(tiny_model, {name: state[name]}, {}, [0.0], lambda m: [])
    with pytest.raises(KeyError):
        interpolate(tiny_model, {"nope": state[name]}, {"nope": state[name]}, [0.0], lambda m: [])

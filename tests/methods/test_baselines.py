"""The paper's other baselines: LoRA + L2, replay, EWC, DoRA, PEFT-default (IA)^3."""

import pytest
import torch

from gainbench.data.replay import mix_in_replay
from gainbench.errors import GainbenchError
from gainbench.methods import make_method
from tests.conftest import train_a_little


def _lora_deltas(model):
    from peft.tuners.lora import LoraLayer

    return [m.scaling["default"] * (m.lora_B["default"].weight @ m.lora_A["default"].weight)
            for m in model.modules() if isinstance(m, LoraLayer)]


def test_lora_l2_penalty_is_l2_times_the_squared_update_norm(tiny_model):
    method = make_method("lora_l2", l2=0.5)
    adapted = method.attach(tiny_model)
    assert method.regularization(adapted) is not None
    with torch.no_grad():  # B starts at zero; give it a value so the penalty is not trivially 0
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_()
    expected = 0.5 * sum(d.pow(2).sum() for d in _lora_deltas(adapted))
    assert expected > 0
    torch.testing.assert_close(method.regularization(adapted), expected)
    assert make_method("lora_l2", l2=0.0).regularization(adapted) is None


def test_lora_l2_shrinks_the_update(tiny_model, token_batch):
    sizes = {}
    for l2 in (0.0, 100.0):
        model = type(tiny_model)(tiny_model.config)
        model.load_state_dict(tiny_model.state_dict())
        torch.manual_seed(0)
        method = make_method("lora_l2", l2=l2, dropout=0.0)
        adapted = method.attach(model)
        train_a_little(adapted, method, token_batch, steps=10)
        sizes[l2] = sum(d.pow(2).sum() for d in _lora_deltas(adapted)).item()
    assert sizes[100.0] < 0.5 * sizes[0.0]


def test_replay_mixes_the_fraction_and_keeps_the_budget():
    current = torch.zeros(8, 4, dtype=torch.long)
    earlier = [torch.ones(5, 4, dtype=torch.long), torch.full((5, 4), 2)]
    mixed = mix_in_replay(current, earlier, 0.25, seed=0)
    assert mixed.shape == current.shape
    assert (mixed[:, 0] == 0).sum() == 6 and (mixed[:, 0] > 0).sum() == 2
    assert torch.equal(mixed, mix_in_replay(current, earlier, 0.25, seed=0))
    assert torch.equal(mix_in_replay(current, [], 0.25, seed=0), current)  # stage 1: nothing to replay


def test_replay_fraction_is_validated():
    with pytest.raises(GainbenchError, match="replay_fraction must be in"):
        make_method("replay_lora", replay_fraction=1.5)


def test_ewc_fisher_anchor_penalty_and_replay(tiny_model, token_batch):
    method = make_method("ewc", lam=10.0, fisher_batches=2)
    adapted = method.attach(tiny_model)
    assert method.regularization(adapted) is None  # stage 1: nothing to protect yet
    method.after_training(adapted, token_batch, batch_size=2)
    assert all((f >= 0).all() for f in method.fisher.values())
    assert sum(f.sum() for f in method.fisher.values()) > 0
    assert method.regularization(adapted).item() == 0.0  # at the anchor
    with torch.no_grad():
        for p in adapted.parameters():
            p.add_(0.01)
    assert method.regularization(adapted).item() > 0

    state = method.stage_state(adapted)
    fresh = make_method("ewc", lam=10.0, fisher_batches=2)
    replayed = fresh.replay(type(tiny_model)(tiny_model.config), state)
    for n, f in method.fisher.items():
        assert torch.equal(fresh.fisher[n], f)
    for (n, a), b in zip(adapted.named_parameters(), replayed.parameters()):
        assert torch.equal(a, b), n


def test_ewc_accumulates_fisher_over_stages(tiny_model, token_batch):
    method = make_method("ewc", fisher_batches=1)
    adapted = method.attach(tiny_model)
    method.after_training(adapted, token_batch, batch_size=4)
    first = {n: f.clone() for n, f in method.fisher.items()}
    method.after_training(adapted, token_batch, batch_size=4)
    for n, f in method.fisher.items():
        torch.testing.assert_close(f, 2 * first[n])


def test_ia3_peft_defaults_use_peft_s_own_modules(tiny_model):
    if tiny_model.config.model_type != "llama":
        pytest.skip("PEFT's (IA)^3 default mapping is checked on Llama")
    method = make_method("ia3_peft")
    names = set(method.trainable_parameters(method.attach(tiny_model)))
    assert any("k_proj" in n for n in names) and any("down_proj" in n for n in names)
    assert not any("o_proj" in n for n in names)

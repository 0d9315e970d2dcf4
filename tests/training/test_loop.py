"""One stage of training: learns, is deterministic for a seed, applies penalties, refuses NaN."""

import pytest
import torch

from gainbench.errors import GainbenchError
from gainbench.training.loop import TrainSettings, train_stage


def _blocks(token_batch, repeats=4):
    return token_batch.repeat(repeats, 1)  # a repeated batch: the loss must go down


def _params(model):
    return {n: p for n, p in model.named_parameters()}


def test_loss_decreases_on_a_repeated_batch(tiny_model, token_batch):
    stats = train_stage(tiny_model, _params(tiny_model), _blocks(token_batch),
                        TrainSettings(lr=1e-2, batch_size=4, schedule="constant"), seed=0)
    assert stats.steps == 4 and stats.tokens == 16 * 32
    assert stats.final_loss < stats.mean_loss


def test_same_seed_same_weights(tiny_model, token_batch):
    import copy
    twin = copy.deepcopy(tiny_model)
    settings = TrainSettings(lr=1e-3, batch_size=2)
    for model in (tiny_model, twin):
        train_stage(model, _params(model), _blocks(token_batch), settings, seed=7)
    for a, b in zip(tiny_model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_regularization_is_added_to_the_loss(tiny_model, token_batch):
    bias = next(p for n, p in tiny_model.named_parameters() if "norm" in n or "ln_" in n)
    start = bias.detach().clone()
    calls = []

    def pull_far_away():
        calls.append(1)
        return 1e3 * ((bias - 10.0) ** 2).sum()

    train_stage(tiny_model, {"b": bias}, _blocks(token_batch),
                TrainSettings(lr=1e-1, batch_size=4, schedule="constant", max_grad_norm=0.0),
                seed=0, regularization=pull_far_away)
    assert len(calls) == 4
    assert (bias - start).mean() > 0.2  # the penalty, not the LM loss, dominated the update


def test_non_finite_loss_is_a_clear_error(tiny_model, token_batch):
    params = _params(tiny_model)
    with torch.no_grad():
        for p in params.values():
            p.fill_(float("nan"))
    with pytest.raises(GainbenchError, match="loss is nan at step 1/4; lower train.lr"):
        train_stage(tiny_model, params, _blocks(token_batch), TrainSettings(lr=1e-3), seed=0)


def test_bad_settings_fail_at_once():
    with pytest.raises(GainbenchError, match="train.lr must be a positive number"):
        TrainSettings(lr=0.0)
    with pytest.raises(GainbenchError, match="train.batch_size must be >= 1"):
        TrainSettings(lr=1e-3, batch_size=0)

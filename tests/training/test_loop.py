"""One stage of training: learns, is deterministic for a seed, applies penalties, refuses NaN;
gradient accumulation, activation checkpointing and bf16 autocast change how a step is computed,
not (beyond rounding) what it computes."""

import copy

import pytest
import torch

from gainbench.errors import GainbenchError
from gainbench.evaluation.perplexity import validation_nll
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


def _train(model, blocks, **settings):
    """One stage of ``model`` with the settings these tests share, and ``settings`` on top."""
    return train_stage(model, _params(model), blocks,
                       TrainSettings(lr=1e-3, batch_size=4, **settings), seed=0)


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_grad_accumulation_is_the_same_step_in_smaller_pieces(tiny_model, token_batch):
    for module in tiny_model.modules():  # dropout would draw other masks per micro-batch
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    pieces, before = copy.deepcopy(tiny_model), _flat(tiny_model)
    whole_stats = _train(tiny_model, _blocks(token_batch))
    # 3 micro-batches of a 4-block batch: 2, 1 and 1 blocks, each weighted by its share
    pieces_stats = _train(pieces, _blocks(token_batch), grad_accum_steps=3)
    assert not torch.equal(_flat(tiny_model), before)
    # All parameters as one vector: one whose true gradient is 0 (GPT-2's key bias) takes AdamW
    # steps from rounding noise alone, so tensor by tensor they need not agree (measured over
    # all: 2e-7 gpt2, 1e-7 llama).
    relative = (_flat(pieces) - _flat(tiny_model)).norm() / _flat(tiny_model).norm()
    assert relative < 1e-6
    assert pieces_stats.mean_loss == pytest.approx(whole_stats.mean_loss, rel=1e-6)


def _count_calls(model):
    """A list that grows by one each time the first decoder layer's MLP runs."""
    calls = []
    mlp = next(m for name, m in model.named_modules() if name.endswith(".0.mlp"))
    mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def test_activation_checkpointing_recomputes_the_same_step(tiny_model, token_batch):
    recomputed = copy.deepcopy(tiny_model)
    plain_calls, recomputed_calls = _count_calls(tiny_model), _count_calls(recomputed)
    plain_stats = _train(tiny_model, _blocks(token_batch))
    recomputed_stats = _train(recomputed, _blocks(token_batch), activation_checkpointing=True)
    assert (len(plain_calls), len(recomputed_calls)) == (4, 8)  # 4 steps, each layer rerun in backward
    assert not recomputed.is_gradient_checkpointing  # only for the stage
    assert plain_stats.mean_loss == recomputed_stats.mean_loss
    for a, b in zip(tiny_model.parameters(), recomputed.parameters()):
        assert torch.equal(a, b)  # bitwise on CPU, dropout included (its RNG state is replayed)


def test_bf16_autocast_trains_close_to_fp32_and_leaves_evaluation_in_fp32(tiny_model, token_batch):
    bf16, never_trained = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    fp32_loss = _train(tiny_model, _blocks(token_batch)).mean_loss
    bf16_loss = _train(bf16, _blocks(token_batch), precision="bf16").mean_loss
    assert bf16_loss != fp32_loss and abs(bf16_loss - fp32_loss) / fp32_loss < 1e-2
    # Evaluation is not autocast: the stage leaves fp32 weights and no autocast behind, so the
    # trained model scores exactly as its weights do in a model that never trained.
    assert {p.dtype for p in bf16.parameters()} == {torch.float32}
    assert not torch.is_autocast_enabled("cpu")
    never_trained.load_state_dict(bf16.state_dict())
    scored = validation_nll(bf16, token_batch, n_bytes=1).total_nll
    assert validation_nll(never_trained, token_batch, n_bytes=1).total_nll == scored
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what an autocast evaluation would give
        assert validation_nll(bf16, token_batch, n_bytes=1).total_nll != scored


def test_every_optimiser_step_is_reported_with_its_loss_and_learning_rate(tiny_model, token_batch):
    from gainbench.training.loop import TrainStep

    reported: list[TrainStep] = []
    blocks = _blocks(token_batch, repeats=8)   # 32 blocks, 8 steps of 4
    stats = train_stage(tiny_model, _params(tiny_model), blocks,
                        TrainSettings(lr=1e-2, batch_size=4, warmup_fraction=0.25), seed=0,
                        on_step=reported.append)
    assert [s.step for s in reported] == list(range(1, 9)) and {s.steps for s in reported} == {8}
    assert {s.tokens for s in reported} == {4 * 32}
    assert sum(s.loss for s in reported) / 8 == pytest.approx(stats.mean_loss)
    assert reported[-1].loss == stats.final_loss
    # 2 warmup steps from 0, then cosine down from the peak
    lrs = [s.lr for s in reported]
    assert lrs[:3] == pytest.approx([0.0, 5e-3, 1e-2])
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))


def test_without_a_terminal_training_prints_a_periodic_progress_line(tiny_model, token_batch,
                                                                       capsys):
    import re

    settings = TrainSettings(lr=1e-3, batch_size=4)
    train_stage(tiny_model, _params(tiny_model), _blocks(token_batch), settings, seed=0,
                desc="stage 2/8 train kjv_bible")   # the default: every 30 s, none in this test
    assert capsys.readouterr().err == ""
    train_stage(tiny_model, _params(tiny_model), _blocks(token_batch), settings, seed=0,
                desc="stage 2/8 train kjv_bible", progress_seconds=1e-9)
    lines = capsys.readouterr().err.splitlines()   # pytest's stderr is not a terminal
    assert len(lines) == 4
    assert all(re.fullmatch(r"gainbench: stage 2/8 train kjv_bible: step \d/4 loss \d+\.\d{4} "
                            r"[\d,]+ tokens/s ETA \d+s", line) for line in lines), lines
    assert lines[-1].startswith("gainbench: stage 2/8 train kjv_bible: step 4/4 ")
    assert lines[-1].endswith("ETA 0s")


def test_progress_durations_read_at_a_glance():
    from gainbench.training.loop import _duration

    assert [_duration(s) for s in (0.4, 59, 65, 3599, 3600 * 2 + 61)] == [
        "0s", "59s", "1m05s", "59m59s", "2h01m"]

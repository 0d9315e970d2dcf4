"""Pooled perplexity: hand-computed on a model with known logits, and batch-size invariant."""

import math

import pytest
import torch

from gainbench.evaluation.perplexity import PooledNLL, validation_nll


class FixedLogits(torch.nn.Module):
    """Predicts the same distribution at every position: NLL is computable by hand."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(logits))

    def forward(self, input_ids):
        return type("Out", (), {"logits": self.logits.expand(*input_ids.shape, -1)})()


def test_nll_matches_hand_computation():
    probs = torch.tensor([0.5, 0.25, 0.25])
    model = FixedLogits(probs.log().tolist())
    blocks = torch.tensor([[0, 1, 2], [2, 0, 0]])  # predicted tokens: 1, 2, 0, 0
    result = validation_nll(model, blocks, n_bytes=8, batch_size=1)
    expected_total = -(math.log(0.25) + math.log(0.25) + 2 * math.log(0.5))
    assert result.n_tokens == 4
    assert result.total_nll == pytest.approx(expected_total)
    assert result.nll == pytest.approx(expected_total / 4)
    assert result.ppl == pytest.approx(math.exp(expected_total / 4))
    assert result.bits_per_byte == pytest.approx(expected_total / math.log(2) / 8)


def test_pooled_not_mean_of_batch_perplexities():
    r = PooledNLL(total_nll=6.0, n_tokens=4, n_bytes=10)
    assert r.nll == 1.5 and r.ppl == pytest.approx(math.exp(1.5))


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_result_does_not_depend_on_batch_size(tiny_model, tiny_tokenizer, batch_size):
    ids = tiny_tokenizer("the quick brown fox jumps over the lazy dog " * 40)["input_ids"]
    blocks = torch.tensor(ids[: 7 * 16]).view(7, 16)
    reference = validation_nll(tiny_model, blocks, 100, batch_size=7)
    result = validation_nll(tiny_model, blocks, 100, batch_size=batch_size)
    assert result.n_tokens == 7 * 15
    assert result.total_nll == pytest.approx(reference.total_nll, rel=1e-6)


def test_mode_is_restored(tiny_model, tiny_tokenizer):
    tiny_model.train()
    validation_nll(tiny_model, torch.zeros(1, 4, dtype=torch.long), 4)
    assert tiny_model.training

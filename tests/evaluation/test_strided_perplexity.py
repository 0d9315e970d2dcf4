"""Strided sliding-window perplexity: matches validation_nll at stride == context, scores every
token once, does not depend on the batch size, and rewards context on a model built to need it;
the perplexity evaluator scores each domain's validation stream this way when eval.stride is set."""

import math

import pytest
import torch

from gainbench.data.domains import DomainData
from gainbench.evaluation.evaluators import Perplexity
from gainbench.evaluation.perplexity import _windows, strided_nll, validation_nll


def _stream(tokenizer, n):
    ids = tokenizer("the quick brown fox jumps over the lazy dog " * 60)["input_ids"]
    assert len(ids) >= n
    return torch.tensor(ids[:n])


def test_stride_equal_context_is_validation_nll(tiny_model, tiny_tokenizer):
    tokens = _stream(tiny_tokenizer, 6 * 16)
    blocks = validation_nll(tiny_model, tokens.view(6, 16), 100, batch_size=4)
    strided = strided_nll(tiny_model, tokens, 100, context=16, stride=16, batch_size=4)
    assert strided.n_tokens == blocks.n_tokens == 6 * 15
    assert strided.total_nll == pytest.approx(blocks.total_nll, rel=1e-6)


@pytest.mark.parametrize("n, context, stride", [(100, 16, 8), (100, 16, 5), (97, 32, 1), (10, 16, 4)])
def test_every_token_after_the_first_scored_once(n, context, stride):
    width = min(context, n)
    counts = [0] * n
    for begin, first in _windows(n, context, stride):
        for pos in range(begin + first, begin + width):
            counts[pos] += 1
    assert counts == [0] + [1] * (n - 1)


def test_n_tokens_and_tail(tiny_model, tiny_tokenizer):
    tokens = _stream(tiny_tokenizer, 70)
    assert strided_nll(tiny_model, tokens, 1, context=16, stride=4).n_tokens == 69
    # stride == context with a tail: 4 windows lose their first token, the tail's last window none.
    assert strided_nll(tiny_model, tokens, 1, context=16, stride=16).n_tokens == 4 * 15 + 6


@pytest.mark.parametrize("batch_size", [1, 3, 50])
def test_batch_size_invariant(tiny_model, tiny_tokenizer, batch_size):
    tokens = _stream(tiny_tokenizer, 90)
    reference = strided_nll(tiny_model, tokens, 100, context=24, stride=7, batch_size=8)
    result = strided_nll(tiny_model, tokens, 100, context=24, stride=7, batch_size=batch_size)
    assert result.n_tokens == reference.n_tokens == 89
    assert result.total_nll == pytest.approx(reference.total_nll, rel=1e-6)


def test_mode_is_restored_and_bad_arguments(tiny_model):
    tiny_model.train()
    strided_nll(tiny_model, torch.zeros(10, dtype=torch.long), 4, context=4, stride=2)
    assert tiny_model.training
    for context, stride in [(4, 5), (4, 0), (1, 1)]:
        with pytest.raises(ValueError):
            strided_nll(tiny_model, torch.zeros(10, dtype=torch.long), 4, context=context, stride=stride)


class NeedsContext(torch.nn.Module):
    """On the stream 0, 1, 2, ... (mod V): predicts the next token with confidence once it has
    seen ``k`` tokens in its window (input position >= k), and is uniform before that."""

    V, BIG = 7, 10.0

    def __init__(self, k):
        super().__init__()
        self.k = k
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids):
        b, t = input_ids.shape
        logits = torch.zeros(b, t, self.V)
        sure = torch.nn.functional.one_hot((input_ids + 1) % self.V, self.V).float() * self.BIG
        logits[:, self.k:] = sure[:, self.k:]
        return type("Out", (), {"logits": logits})()


@pytest.mark.parametrize("stride, n_low, n_high", [
    # 12 tokens, windows of 4, k=2: hand-counted targets predicted from < 2 / >= 2 tokens in the window.
    (4, 6, 3),   # windows 0, 4, 8: each scores 3 targets, 2 of them from input positions 0 and 1
    (2, 6, 5),   # windows 0, 2, 4, 6, 8: the first 2 low + 1 high; the others 1 low + 1 high
    (1, 2, 9),   # windows 0..8: the first 2 low + 1 high; each later one 1 high
])
def test_smaller_stride_uses_more_context(stride, n_low, n_high):
    model = NeedsContext(k=2)
    tokens = torch.arange(12) % NeedsContext.V
    low = math.log(NeedsContext.V)
    high = -torch.log_softmax(torch.tensor([NeedsContext.BIG] + [0.0] * (NeedsContext.V - 1)), 0)[0].item()
    result = strided_nll(model, tokens, 12, context=4, stride=stride, batch_size=2)
    assert result.n_tokens == n_low + n_high
    assert result.total_nll == pytest.approx(n_low * low + n_high * high)


def test_nll_falls_as_stride_shrinks():
    model, tokens = NeedsContext(k=3), torch.arange(64) % NeedsContext.V
    nlls = [strided_nll(model, tokens, 64, context=8, stride=s).nll for s in (8, 6, 4, 2, 1)]
    assert nlls == sorted(nlls, reverse=True) and nlls[-1] < nlls[0]


def test_strided_perplexity_scores_every_token_once_with_more_context():
    """eval.stride=16 on train.seq_len=64 blocks (the protocol builds Perplexity so): the
    validation blocks are scored as one stream, every token but the first, each with at least
    48 tokens before it; without a stride each block's first token goes unscored."""
    tokens = torch.arange(512) % NeedsContext.V
    domain = DomainData("stream", train_blocks=tokens.view(8, 64), val_blocks=tokens.view(8, 64),
                        val_bytes=3 * 8 * 63, val_stream_bytes=2 * 511)  # bytes per scored token: 3, 2
    model = NeedsContext(k=3)  # uncertain of the first 3 targets of each window, sure of the rest
    blocks, strided = ({row["metric"]: row for row in Perplexity([domain], 4, stride, context=64)(model, 1)
                        if row["eval_kind"] == "ppl"} for stride in (None, 16))
    assert strided["nll"]["n"] == 512 - 1 and blocks["nll"]["n"] == 8 * 63
    assert strided["nll"]["value"] < blocks["nll"]["value"]  # only the first window lacks context
    assert strided["bpb"]["value"] == pytest.approx(strided["nll"]["value"] / 2 / math.log(2))
    assert blocks["bpb"]["value"] == pytest.approx(blocks["nll"]["value"] / 3 / math.log(2))

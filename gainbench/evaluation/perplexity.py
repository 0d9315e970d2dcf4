"""Validation perplexity, pooled: total NLL over total predicted tokens (DESIGN.md section 4).

Never a mean of per-batch perplexities, so the result does not depend on the batch size.
Given each token's document (``doc_index``), the same pass also sums NLL and counts predicted
tokens per validation document (a token belongs to the document of the token it predicts), so
intervals can resample documents; the pooled total is computed exactly as without them.

Under ``train.strategy=ddp|fsdp`` each rank scores a contiguous share of the batches and the
per-batch float64 sums of all ranks are added in batch order: the same additions, in the same
order, as one process scoring every batch, so the pooled NLL is the single-process number
(bitwise, when the weights are bitwise the same). This holds with the weights sharded too
(``train.shard_weights``): each layer's weights are gathered whole for the forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gainbench.distributed import Ranks
from gainbench.placement import SINGLE_PROCESS, Placement


@dataclass(frozen=True)
class PooledNLL:
    total_nll: float   # nats, summed over predicted tokens
    n_tokens: int      # predicted tokens: each block but its first token
    n_bytes: int       # UTF-8 bytes of those tokens
    doc_nll: np.ndarray | None = None     # nats per validation document (float64), if asked
    doc_tokens: np.ndarray | None = None  # predicted tokens per validation document

    @property
    def nll(self) -> float:
        return self.total_nll / self.n_tokens

    @property
    def ppl(self) -> float:
        # a diverged model's NLL can pass exp's range (709 nats): its perplexity is infinite
        return math.exp(self.nll) if self.nll < 709.78 else math.inf

    @property
    def bits_per_byte(self) -> float:
        return self.total_nll / math.log(2) / self.n_bytes


def token_nll(model, batch: torch.Tensor) -> torch.Tensor:
    """NLL (nats, fp32) of each predicted token of each row of ``batch``: ``[b, len - 1]``.

    Scores the full logits against targets shifted left and padded (the last position ignored),
    which avoids copying a ``[:, :-1]`` slice of the largest tensor of the pass.
    """
    logits = model(input_ids=batch).logits
    targets = F.pad(batch[:, 1:], (0, 1), value=-100)
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                          ignore_index=-100, reduction="none")
    return nll.view(batch.shape)[:, :-1]


def _per_document(nll: torch.Tensor, docs: torch.Tensor | None, n_docs: int):
    """Per-document NLL sums (float64) and token counts of one batch's scored tokens ``nll``,
    whose documents are ``docs`` (same shape); None when documents are not tracked."""
    if docs is None:
        return None
    docs = docs.reshape(-1).to(nll.device)
    sums = torch.zeros(n_docs, dtype=torch.float64, device=nll.device)
    sums.index_add_(0, docs, nll.reshape(-1).double())
    return sums.cpu().numpy(), torch.bincount(docs, minlength=n_docs).cpu().numpy()


def _pooled(score_batch, n_batches: int, ranks: Ranks, lockstep: bool = False):
    """Sums of ``score_batch(i) -> (nll, n_tokens, per_document)`` over batches
    ``0..n_batches-1``, each rank scoring its share, added in batch order; ``per_document`` is
    None or ``(nll sums, token counts)`` arrays. Returns ``(nll, n_tokens, per_document)``.

    ``lockstep`` (a model whose weights are sharded, so each forward pass is a collective): a
    rank with a shorter share scores batch 0 once more and discards it, so every rank makes
    the same number of passes."""
    share = ranks.shard(n_batches)
    mine = [score_batch(i) for i in share]
    longest = -(-n_batches // ranks.world_size)  # rank 0's share
    if lockstep and len(share) < longest:
        score_batch(0)
    total, n_scored, per_document = 0.0, 0, None
    for nll, n, docs in ranks.gather(mine):
        total += nll
        n_scored += n
        if docs is not None:
            per_document = docs if per_document is None else (per_document[0] + docs[0],
                                                               per_document[1] + docs[1])
    return total, n_scored, per_document


# no_grad, not inference_mode: on a sharded model FSDP keeps the gathered weights' buffers for
# later passes, and buffers made in inference mode could not be written by training after it.
@torch.no_grad()
def validation_nll(model, blocks: torch.Tensor, n_bytes: int, batch_size: int = 8,
                   placement: Placement = SINGLE_PROCESS, doc_index: torch.Tensor | None = None,
                   n_docs: int = 0) -> PooledNLL:
    """Pooled NLL of ``blocks`` (``[n, block_len]`` token ids), each block scored on its own;
    with ``doc_index`` (each token's document, shaped as ``blocks``), per document too."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device

    def score(i):
        rows = slice(i * batch_size, (i + 1) * batch_size)
        batch = blocks[rows].to(device)
        nll = token_nll(model, batch)
        docs = None if doc_index is None else doc_index[rows, 1:]
        # summed in float64: the total must not depend on batching
        return (float(nll.double().sum()), batch.size(0) * (batch.size(1) - 1),
                _per_document(nll, docs, n_docs))

    total, n_scored, per_document = _pooled(score, math.ceil(len(blocks) / batch_size),
                                            placement.ranks, placement.lockstep(model))
    model.train(was_training)
    return PooledNLL(total, n_scored, n_bytes, *(per_document or (None, None)))


def _windows(n: int, context: int, stride: int) -> list[tuple[int, int]]:
    """``(begin, first)`` per window: it reads ``tokens[begin:begin + min(context, n)]`` and scores
    its targets from in-window position ``first`` on (the ones no earlier window scored)."""
    width = min(context, n)
    begins = list(range(0, n - width + 1, stride))
    if begins[-1] + width < n:
        begins.append(n - width)  # a last full window flush with the end, not a short one
    windows, scored_until = [], 0
    for begin in begins:
        # Position 0 of a window has no context inside it and is never a target.
        windows.append((begin, max(scored_until - begin, 1)))
        scored_until = begin + width
    return windows


@torch.no_grad()  # not inference_mode: see validation_nll
def strided_nll(model, tokens: torch.Tensor, n_bytes: int, context: int, stride: int,
                batch_size: int = 8, placement: Placement = SINGLE_PROCESS,
                doc_index: torch.Tensor | None = None, n_docs: int = 0) -> PooledNLL:
    """Pooled NLL of a 1-D token stream with a sliding window (the HF "perplexity of
    fixed-length models" recipe).

    Windows of ``context`` tokens start every ``stride`` tokens; each scores only the tokens no
    earlier window scored, so no token is scored twice, and each with the most context the window
    allows (at least ``context - stride`` tokens, after the first window). With
    ``stride < context`` every token but the first is scored (``n_tokens == len(tokens) - 1``).
    ``stride == context`` gives non-overlapping windows whose first tokens have no context and
    are left out: exactly :func:`validation_nll` on ``tokens.view(-1, context)``. A tail shorter
    than a window is scored by one last window that ends at the last token. ``doc_index``, if
    given, is each token's document (a 1-D stream like ``tokens``).
    """
    if tokens.dim() != 1 or len(tokens) < 2:
        raise ValueError(f"strided_nll needs a 1-D stream of at least 2 tokens, got shape {tuple(tokens.shape)}")
    if not 1 <= stride <= context or context < 2:
        raise ValueError(f"strided_nll needs 1 <= stride <= context and context >= 2, got "
                         f"stride={stride}, context={context} (a stride past the window skips tokens)")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    windows = _windows(len(tokens), context, stride)
    width = min(context, len(tokens))

    def score(i):
        chunk = windows[i * batch_size:(i + 1) * batch_size]
        batch = torch.stack([tokens[b:b + width] for b, _ in chunk]).to(device)
        nll = token_nll(model, batch)
        # Target j + 1 of a window is scored when j + 1 >= that window's first scored position.
        firsts = torch.tensor([f for _, f in chunk], device=device)
        keep = torch.arange(1, width, device=device)[None, :] >= firsts[:, None]
        docs = (None if doc_index is None else
                torch.stack([doc_index[b + 1:b + width] for b, _ in chunk]).to(device)[keep])
        # Summed in float64 per window batch, so batching changes only rounding in the last digits.
        return (float(nll.double()[keep].sum()), int(keep.sum()),
                _per_document(nll[keep], docs, n_docs))

    total, n_scored, per_document = _pooled(score, math.ceil(len(windows) / batch_size),
                                            placement.ranks, placement.lockstep(model))
    model.train(was_training)
    return PooledNLL(total, n_scored, n_bytes, *(per_document or (None, None)))

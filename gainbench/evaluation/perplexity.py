"""Validation perplexity, pooled: total NLL over total predicted tokens (DESIGN.md section 4).

Never a mean of per-batch perplexities, so the result does not depend on the batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PooledNLL:
    total_nll: float   # nats, summed over predicted tokens
    n_tokens: int      # predicted tokens: each block but its first token
    n_bytes: int       # UTF-8 bytes of those tokens

    @property
    def nll(self) -> float:
        return self.total_nll / self.n_tokens

    @property
    def ppl(self) -> float:
        return math.exp(self.nll)

    @property
    def bits_per_byte(self) -> float:
        return self.total_nll / math.log(2) / self.n_bytes


@torch.inference_mode()
def validation_nll(model, blocks: torch.Tensor, n_bytes: int, batch_size: int = 8) -> PooledNLL:
    """Pooled NLL of ``blocks`` (``[n, block_len]`` token ids), each block scored on its own."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start:start + batch_size].to(device)
        logits = model(input_ids=batch).logits[:, :-1]
        # fp32 and float64 accumulation: the sum over many tokens must not depend on batching.
        nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                              batch[:, 1:].reshape(-1), reduction="sum")
        total += float(nll.double())
    model.train(was_training)
    return PooledNLL(total, blocks.size(0) * (blocks.size(1) - 1), n_bytes)

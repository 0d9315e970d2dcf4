"""Replay: mix blocks of earlier domains into a stage's training blocks."""

from __future__ import annotations

import torch


def mix_in_replay(current: torch.Tensor, earlier: list[torch.Tensor], fraction: float,
                  seed: int) -> torch.Tensor:
    """Replace ``round(fraction * len(current))`` of ``current``'s blocks by blocks drawn uniformly,
    without replacement, from all of ``earlier``'s blocks. The count (token budget) is unchanged.
    """
    pool = torch.cat(earlier) if earlier else current[:0]
    n_replay = min(round(fraction * len(current)), len(pool))
    if n_replay == 0:
        return current
    picked = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n_replay]
    return torch.cat([current[: len(current) - n_replay], pool[picked]])

"""Where a run's model lives, and how its processes share the work: one object, built once by
the protocol, that the protocol, the methods and the evaluators ask instead of branching on
``train.strategy`` themselves.

Four placements, one interface:

* one process (the default, and what tests get from ``Placement()``);
* ``ddp`` / ``fsdp``: one process per device, each with a full copy of the weights; training and
  perplexity batches are split between ranks, lm-eval and the column-span diagnostic run on
  rank 0 while the others wait, and only rank 0 writes the run folder;
* ``fsdp`` with ``train.shard_weights=true``: each rank holds a shard of the weights for the
  whole run, so every forward pass and every gathered matrix is collective: all ranks evaluate
  together, and weight edits act on each rank's rows in place.

The engines underneath are torch's own (DDP, FSDP2, DTensor); this module only answers the
questions: where do I load, edit weights, gather, evaluate, write and wait.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from gainbench import distributed
from gainbench.distributed import Ranks


def _device(name: str, ranks: Ranks) -> torch.device:
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", ranks.local_rank) if ranks.world_size > 1 else torch.device("cuda")
    return torch.device(name)


@dataclass(frozen=True)
class Placement:
    ranks: Ranks = field(default_factory=Ranks)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    shard_weights: bool = False   # the weights stay sharded across ranks for the whole run

    @classmethod
    def create(cls, strategy: str, shard_weights: bool, device: str = "auto") -> Placement:
        """Join the process group a launcher set up (``ddp``/``fsdp``) and pick the device."""
        ranks = distributed.init_ranks(strategy)
        return cls(ranks, _device(device, ranks), bool(shard_weights) and ranks.world_size > 1)

    # -- who writes, who speaks, who waits --------------------------------------------------

    @property
    def is_main(self) -> bool:
        """The one process that writes the run folder, the summary and wandb."""
        return self.ranks.is_main

    def say(self, *args, **kwargs) -> None:
        if self.is_main:
            print(*args, **kwargs)

    def barrier(self) -> None:
        self.ranks.barrier()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        return self.ranks.broadcast(obj)

    def close(self) -> None:
        distributed.close(self.ranks)

    # -- loading ----------------------------------------------------------------------------

    def load(self, load: Callable[[torch.device], tuple[nn.Module, object]],
             trust_remote_code: bool = False):
        """``(model, tokenizer)`` from ``load(device)``. With sharded weights rank 0 alone reads
        the checkpoint onto its CPU, and every rank then receives only its shard."""
        if not self.shard_weights:
            return load(self.device)
        from gainbench.training.sharding import shard_model

        loaded, tokenizer = load(torch.device("cpu")) if self.is_main else (None, None)
        tokenizer = self.broadcast(tokenizer)
        model = shard_model(loaded, self.ranks, self.device, trust_remote_code)
        del loaded
        return model, tokenizer

    # -- weights ----------------------------------------------------------------------------

    def lockstep(self, model: nn.Module) -> bool:
        """Whether every forward pass of ``model`` is a collective (its weights are sharded), so
        all ranks must run the same number of passes."""
        from gainbench.training.sharding import is_sharded

        return self.ranks.world_size > 1 and is_sharded(model)

    def evaluates_whole_model(self, model: nn.Module) -> bool:
        """Whether this rank takes part in an evaluation that needs the whole model (lm-eval,
        the column-span diagnostic): rank 0, or every rank when the weights are sharded."""
        return self.is_main or self.lockstep(model)

    def editing(self, model: nn.Module):
        """Around weight edits (attach, absorb, merge, replay): on sharded weights a plain tensor
        meeting a shard counts as the same tensor on every rank, so ``W *= s`` or ``W += B @ A``
        updates each rank's rows in place (an assignment ``W.data = ...`` would be lost; methods
        that need one set ``supports_sharded_weights = False``)."""
        if not self.lockstep(model):
            return contextlib.nullcontext()
        from gainbench.training.sharding import on_sharded_weights

        return on_sharded_weights(model)

    def gather(self, tensors: dict) -> dict:
        """CPU copies of ``tensors`` on rank 0 (sharded ones gathered whole first, which every
        rank holding a shard takes part in); an empty dict on the other ranks."""
        from gainbench.training.sharding import gathered, is_sharded_tensor

        if not (self.is_main or any(is_sharded_tensor(t) for t in tensors.values())):
            return {}
        return gathered(tensors, keep=self.is_main)

    def whole(self, tensor) -> torch.Tensor:
        """``tensor`` whole (a collective for a sharded one: every rank calls it)."""
        from gainbench.training.sharding import whole

        return whole(tensor)

    def offload(self, tensor: torch.Tensor):
        """A CPU copy of ``tensor`` to compare against later; of a sharded one, this rank's
        shard (:meth:`whole` gathers it back)."""
        from gainbench.training.sharding import OffloadedShard, is_sharded_tensor

        return OffloadedShard(tensor) if is_sharded_tensor(tensor) else tensor.detach().cpu().clone()

    def shaped_like(self, saved: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A whole saved tensor (the same on every rank) on ``like``'s device and dtype, and
        sharded as ``like`` is (each rank keeps its part, without communication)."""
        from gainbench.training.sharding import shaped_like

        return shaped_like(saved, like)


SINGLE_PROCESS = Placement()

"""One process per device for ``train.strategy=ddp|fsdp``: who this process is, and the few
collectives the protocol needs.

The processes are started by a launcher that sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_ADDR`` (``torchrun --nproc_per_node=N -m gainbench ...``, or ``accelerate launch``,
which sets the same variables). Every rank runs the whole protocol on a full copy of the
current weights; training batches and validation batches are split between ranks, and only
rank 0 writes the run folder (gainbench/protocol.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from gainbench.errors import GainbenchError

STRATEGIES = ("single", "ddp", "fsdp")
# Ranks 1..N-1 wait at a barrier while rank 0 runs lm-eval (it takes one model in one process):
# the default 30-minute collective timeout is too short for a large task suite.
COLLECTIVE_TIMEOUT = timedelta(hours=4)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes results, logs and wandb."""
        return self.rank == 0

    def shard(self, n: int) -> range:
        """This rank's contiguous share of ``n`` items, in order (sizes differ by at most one)."""
        per, extra = divmod(n, self.world_size)
        start = self.rank * per + min(self.rank, extra)
        return range(start, start + per + (self.rank < extra))

    def gather(self, items: list) -> list:
        """Every rank's ``items``, concatenated in rank order, on every rank. With :meth:`shard`,
        this is the list one process would have built alone, in the same order."""
        if self.world_size == 1:
            return list(items)
        everyone = [None] * self.world_size
        dist.all_gather_object(everyone, list(items))
        return [item for part in everyone for item in part]

    def sum(self, value: float) -> float:
        """``value`` summed over ranks (float64; a NaN on any rank makes it NaN everywhere)."""
        if self.world_size == 1:
            return value
        total = torch.tensor(value, dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(total)
        return float(total)

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_tensor(self, tensor: torch.Tensor) -> None:
        """Overwrite ``tensor`` in place with rank 0's."""
        if self.world_size > 1:
            dist.broadcast(tensor, src=0)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def _collective_device(self) -> torch.device:
        # NCCL reduces CUDA tensors only; gloo (CPU) reduces CPU tensors.
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


def init_ranks(strategy: str) -> Ranks:
    """Join the process group a launcher set up for ``ddp``/``fsdp``; ``single`` is one process.
    ``strategy`` is one of :data:`STRATEGIES` (TrainSettings checks it)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if strategy == "single":
        if world_size > 1:
            raise GainbenchError(f"launched as {world_size} processes but train.strategy=single; "
                                 "add train.strategy=ddp (or fsdp), or launch one process")
        return Ranks()
    _export_submitit_ranks()
    if "RANK" not in os.environ:
        raise GainbenchError(f"train.strategy={strategy} runs one process per device; launch it with "
                             f"`torchrun --nproc_per_node=<devices> -m gainbench train.strategy={strategy} "
                             "...` (or `accelerate launch -m gainbench ...`)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                timeout=COLLECTIVE_TIMEOUT)
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank)


def _export_submitit_ranks() -> None:
    """Under submitit (hydra/launcher=slurm or submitit_local) with ``tasks_per_node`` > 1, each
    task of a job is one rank: set the variables torchrun would have set."""
    if "RANK" in os.environ or "SUBMITIT_EXECUTOR" not in os.environ:
        return
    from submitit.helpers import TorchDistributedEnvironment

    environment = TorchDistributedEnvironment()
    if environment.world_size > 1:
        # every task sees all the node's GPUs and picks cuda:LOCAL_RANK itself
        environment.export(set_cuda_visible_devices=False)


def close(ranks: Ranks) -> None:
    """Tear the group down after success (every rank gets here). The barrier first, the usual
    teardown order: no rank destroys the group while a peer's last collective is in flight.
    Objects that hold the group (a DDP reducer, FSDP state) should be freed before: see the end
    of benchmarks/sharding_memory.py's worker for an abort at exit seen with them alive."""
    if ranks.world_size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

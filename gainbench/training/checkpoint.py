"""Checkpoints inside a stage, so a preempted job loses at most ``every`` optimiser steps.

One file per stage in training, ``<run>/stages/partial_stage_<k>.pt``, overwritten in place
(atomically: temp file + rename, so a kill mid-write leaves the previous checkpoint) and deleted
once the stage's own state is saved. It holds everything the rest of the stage depends on: the
trainable tensors, the optimiser and scheduler states, the global RNG state (dropout) and the
step reached; the data position is the step, since the stage's block order is a function of
its seed. On CPU a resumed stage is bitwise identical to an uninterrupted one.

Only the trainable tensors are saved (GAIN's scales, LoRA's factors; every weight for full
fine-tuning), never a frozen base model.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from gainbench.errors import GainbenchError, first_line
from gainbench.results.store import atomic_write
from gainbench.training.parallel import gathered, shaped_like


class StageCheckpoint:
    """``writer``: whether this process writes the file. Under ddp/fsdp every rank calls
    :meth:`save` (FSDP gathers each sharded tensor whole, a collective) and only rank 0 writes;
    every rank restores from the one file, re-sharding what FSDP shards."""

    def __init__(self, path: str | os.PathLike, every: int, writer: bool = True):
        if every < 1:
            raise ValueError(f"checkpoint interval must be >= 1 step, got {every}")
        self.path = Path(path)
        self.every = every
        self.writer = writer

    def due(self, steps_done: int, total_steps: int) -> bool:
        """After ``steps_done`` steps: every ``every`` steps, never after the last one (the
        stage's own state is saved then)."""
        return steps_done % self.every == 0 and steps_done < total_steps

    def save(self, steps_done: int, params: dict[str, torch.nn.Parameter], optimizer, scheduler,
             losses: list[float]) -> None:
        optimizer_state = optimizer.state_dict()
        # new dicts (state_dict() hands out the optimiser's live per-parameter dicts), gathered
        # on every rank and kept only by the writer
        optimizer_state["state"] = {index: gathered(per_param, keep=self.writer)
                                    for index, per_param in optimizer_state["state"].items()}
        params = gathered(params, keep=self.writer)
        if not self.writer:
            return
        state = {
            "steps_done": steps_done,
            "params": params,
            "optimizer": optimizer_state,
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "losses": torch.tensor(losses, dtype=torch.float64),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))

    def restore(self, params: dict[str, torch.nn.Parameter], optimizer, scheduler) -> tuple[int, list[float]]:
        """Load the checkpoint into ``params``, ``optimizer`` and ``scheduler`` and the global RNG;
        returns (steps done, their losses); (0, []) when there is none."""
        if not self.path.exists():
            return 0, []
        try:
            # mmap: the ranks of one machine share the file's pages instead of a copy each
            state = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
            missing = sorted(set(params) - set(state["params"]))
        except Exception as err:  # truncated, overwritten, or not a checkpoint of ours
            raise GainbenchError(f"in-stage checkpoint {self.path} cannot be read ({first_line(err)}); "
                                 "delete it to restart this stage from its first step (finished "
                                 "stages are kept)") from None
        if missing:
            raise GainbenchError(f"in-stage checkpoint {self.path} does not match this method's "
                                 f"trainable tensors (missing {missing[:3]}); delete it to restart "
                                 "this stage from its first step")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(shaped_like(state["params"][name], p))
        ordered = [p for group in optimizer.param_groups for p in group["params"]]
        for index, per_param in state["optimizer"]["state"].items():
            param = ordered[index]
            for key, value in per_param.items():
                if isinstance(param, DTensor) and value.shape == param.shape:
                    per_param[key] = shaped_like(value, param)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return int(state["steps_done"]), state["losses"].tolist()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


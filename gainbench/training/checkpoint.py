"""Checkpoints inside a stage, so a preempted job loses at most ``every`` optimiser steps.

One file per stage in training, ``<run>/stages/partial_stage_<k>.pt``, overwritten in place
(atomically: temp file + rename, so a kill mid-write leaves the previous checkpoint) and deleted
once the stage's own state is saved. It holds everything the rest of the stage depends on: the
trainable tensors, the optimiser and scheduler states, the global RNG state (dropout) and the
step reached; the data position is the step, since the stage's block order is a function of
its seed. On CPU a resumed stage is bitwise identical to an uninterrupted one.

Only the trainable tensors are saved (GAIN's scales, LoRA's factors; every weight for full
fine-tuning), never a frozen base model.

Tensors FSDP shards (full fine-tuning under ``train.strategy=fsdp``) and their AdamW moments are
never gathered: every rank writes its own shards with ``torch.distributed.checkpoint`` into a
folder beside the file, ``partial_stage_<k>.shards-<step>/``, and only then does rank 0 write the
file that names it; older folders are deleted after. A kill at any moment leaves the file naming
a complete folder (or no file). Restoring reads each rank's part back, re-sharded if the number
of ranks changed.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.tensor import DTensor

from gainbench.errors import GainbenchError, first_line
from gainbench.files import atomic_write
from gainbench.training.sharding import gathered, shaped_like


class StageCheckpoint:
    """``writer``: whether this process writes the file. Under ddp/fsdp every rank calls
    :meth:`save` (each writes its FSDP shards, a collective) and only rank 0 writes the file;
    every rank restores from it and its shard folder."""

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
        sharded = _sharded_tensors(params, optimizer_state)
        shards = None
        if sharded:  # every rank writes its shards (a collective), before the file names them
            shards = self.path.with_name(f"{self.path.stem}.shards-{steps_done:06d}")
            dcp.save(sharded, checkpoint_id=shards)
        # new dicts (state_dict() hands out the optimiser's live per-parameter dicts) of what
        # is not sharded, kept only by the writer
        optimizer_state["state"] = {
            index: {key: value for key, value in per_param.items()
                    if _optimizer_key(index, key) not in sharded}
            for index, per_param in optimizer_state["state"].items()}
        plain = {name: p for name, p in params.items() if _param_key(name) not in sharded}
        if not self.writer:
            return
        state = {
            "steps_done": steps_done,
            "params": gathered(plain),
            "optimizer": {**optimizer_state,
                          "state": {i: gathered(v) for i, v in optimizer_state["state"].items()}},
            "shards": shards.name if shards else None,
            "sharded_keys": sorted(sharded),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "losses": torch.tensor(losses, dtype=torch.float64),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))
        self._delete_shard_folders(keep=shards)

    def restore(self, params: dict[str, torch.nn.Parameter], optimizer, scheduler) -> tuple[int, list[float]]:
        """Load the checkpoint into ``params``, ``optimizer`` and ``scheduler`` and the global RNG;
        returns (steps done, their losses); (0, []) when there is none."""
        if not self.path.exists():
            return 0, []
        try:
            # mmap: the ranks of one machine share the file's pages instead of a copy each
            state = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
            saved = set(state["params"]) | {k.split("/", 1)[1] for k in state.get("sharded_keys", ())
                                              if k.startswith("params/")}
            missing = sorted(set(params) - saved)
        except Exception as err:  # truncated, overwritten, or not a checkpoint of ours
            raise self._unreadable(err) from None
        if missing:
            raise GainbenchError(f"in-stage checkpoint {self.path} does not match this method's "
                                 f"trainable tensors (missing {missing[:3]}); delete it to restart "
                                 "this stage from its first step")
        ordered = [p for group in optimizer.param_groups for p in group["params"]]
        with torch.no_grad():
            for name, value in state["params"].items():
                params[name].copy_(shaped_like(value, params[name]))
            if state.get("shards"):
                self._load_shards(state, params, ordered)
        for index, per_param in state["optimizer"]["state"].items():
            param = ordered[index]
            for key, value in per_param.items():
                if isinstance(param, DTensor) and not isinstance(value, DTensor) \
                        and value.shape == param.shape:
                    per_param[key] = shaped_like(value, param)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return int(state["steps_done"]), state["losses"].tolist()

    def _load_shards(self, state: dict, params: dict, ordered: list) -> None:
        """Each rank reads its parts of the sharded tensors: the parameters in place, the AdamW
        moments into ``state``'s optimiser dict (as DTensors sharded like their parameter)."""
        into = {}
        for key in state["sharded_keys"]:
            kind, rest = key.split("/", 1)
            if kind == "params":
                into[key] = params[rest]
            else:
                index, name = rest.split("/")
                into[key] = torch.zeros_like(ordered[int(index)])
        try:
            with warnings.catch_warnings():  # one process reading ranks' shards is intended
                warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single")
                dcp.load(into, checkpoint_id=self.path.with_name(state["shards"]))
        except CheckpointException as err:  # its folder is missing or damaged (a BaseException)
            raise self._unreadable(next(iter(err.failures.values()), err)) from None
        except Exception as err:
            raise self._unreadable(err) from None
        for key, value in into.items():
            kind, rest = key.split("/", 1)
            if kind == "optimizer":
                index, name = rest.split("/")
                state["optimizer"]["state"][int(index)][name] = value

    def _unreadable(self, err: Exception) -> GainbenchError:
        return GainbenchError(f"in-stage checkpoint {self.path} cannot be read ({first_line(err)}); "
                              "delete it to restart this stage from its first step (with any "
                              f"{self.path.stem}.shards-* folders beside it; finished stages are kept)")

    def _delete_shard_folders(self, keep: Path | None = None) -> None:
        for folder in self.path.parent.glob(f"{self.path.stem}.shards-*"):
            if folder != keep:
                shutil.rmtree(folder, ignore_errors=True)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        self._delete_shard_folders()


def _param_key(name: str) -> str:
    return f"params/{name}"


def _optimizer_key(index: int, key: str) -> str:
    return f"optimizer/{index}/{key}"


def _sharded_tensors(params: dict, optimizer_state: dict) -> dict:
    """The sharded tensors of a checkpoint by key: FSDP-sharded parameters and their optimiser
    moments (``optimizer_state`` indexes parameters in the order of the optimiser's groups)."""
    sharded = {_param_key(name): p for name, p in params.items() if isinstance(p, DTensor)}
    for index, per_param in optimizer_state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, DTensor):
                sharded[_optimizer_key(index, key)] = value
    return sharded


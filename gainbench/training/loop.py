"""One stage of training: one pass over the stage's token budget, in seeded order."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from gainbench.errors import GainbenchError
from gainbench.training.checkpoint import StageCheckpoint


@dataclass(frozen=True)
class TrainSettings:
    lr: float
    batch_size: int = 4
    weight_decay: float = 0.0
    schedule: str = "cosine"          # any transformers scheduler name
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    checkpoint_every: int = 0         # optimiser steps between in-stage checkpoints; 0 = none
    nonfinite: str = "stop"           # a NaN/inf loss: stop (error) | skip (drop the batch, go on)

    def __post_init__(self):
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise GainbenchError(f"train.lr must be a positive number, got {self.lr}")
        if self.batch_size < 1:
            raise GainbenchError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.checkpoint_every < 0:
            raise GainbenchError(f"train.checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.nonfinite not in ("stop", "skip"):
            raise GainbenchError(f"train.nonfinite must be stop or skip, got {self.nonfinite!r}")


@dataclass(frozen=True)
class StageTraining:
    steps: int
    tokens: int
    mean_loss: float
    final_loss: float
    seconds: float
    trainable_params: int | None = None
    skipped_batches: int = 0


def train_stage(model, params: dict[str, torch.nn.Parameter], blocks: torch.Tensor,
                settings: TrainSettings, seed: int, exempt_from_weight_decay: bool = False,
                regularization=None, desc: str = "train",
                checkpoint: StageCheckpoint | None = None) -> StageTraining:
    """Train ``params`` of ``model`` on ``blocks`` (``[n, block_len]``), one epoch, seeded order.

    ``regularization``, if given, is called each step; a tensor it returns is added to the loss
    (e.g. GAIN's pull of the scales toward 1). The reported losses are the LM loss alone.

    Raises :class:`GainbenchError` on a non-finite loss rather than writing NaN results
    (``settings.nonfinite="skip"`` drops that batch's update instead and counts it).

    With ``checkpoint``, the stage saves its state every ``checkpoint.every`` steps and, if a
    checkpoint exists when it starts, continues from it (``gainbench.training.checkpoint``).
    """
    device = next(model.parameters()).device
    # Dropout draws from the global RNG: seed it here (and restore it after), so a stage trains
    # the same whoever calls it, and a resumed run matches an uninterrupted one.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _train(model, params, blocks, settings, seed, exempt_from_weight_decay,
                      regularization, desc, device, checkpoint)


def _train(model, params, blocks, settings, seed, exempt_from_weight_decay, regularization,
           desc, device, checkpoint) -> StageTraining:
    decay = 0.0 if exempt_from_weight_decay else settings.weight_decay
    optimizer = torch.optim.AdamW(list(params.values()), lr=settings.lr, weight_decay=decay,
                                  betas=settings.betas)
    steps = math.ceil(len(blocks) / settings.batch_size)
    scheduler = get_scheduler(settings.schedule, optimizer,
                              num_warmup_steps=int(settings.warmup_fraction * steps),
                              num_training_steps=steps)
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
    model.train()
    done, losses = checkpoint.restore(params, optimizer, scheduler) if checkpoint else (0, [])
    skipped, start = 0, time.perf_counter()
    progress = tqdm(range(done, steps), desc=desc, leave=False, disable=None)
    for step in progress:
        batch = blocks[order[step * settings.batch_size:(step + 1) * settings.batch_size]].to(device)
        loss = model(input_ids=batch, labels=batch).loss
        if not torch.isfinite(loss):
            if settings.nonfinite == "stop":
                raise GainbenchError(_nonfinite_message(desc, loss, step, steps, settings, checkpoint))
            skipped += 1  # train.nonfinite=skip: no update from this batch; the schedule goes on
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            continue
        penalty = regularization() if regularization is not None else None
        (loss if penalty is None else loss + penalty).backward()
        if settings.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(list(params.values()), settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.3f}")
        if checkpoint and checkpoint.due(step + 1, steps):
            checkpoint.save(step + 1, params, optimizer, scheduler, losses)
    return StageTraining(steps, int(blocks.numel()),
                         sum(losses) / max(len(losses), 1), losses[-1] if losses else float("nan"),
                         time.perf_counter() - start, skipped_batches=skipped)


def _nonfinite_message(desc, loss, step, steps, settings, checkpoint) -> str:
    where = (f"; the last good state is {checkpoint.path} (rerun the same command to continue "
             f"from it)" if checkpoint and checkpoint.path.exists() else "")
    return (f"{desc}: loss is {loss.item()} at step {step + 1}/{steps}{where}; lower train.lr "
            f"(now {settings.lr}), use model.dtype=float32, or +train.nonfinite=skip to drop such "
            f"batches")

"""One stage of training: one pass over the stage's token budget, in seeded order."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from gainbench.distributed import STRATEGIES, Ranks
from gainbench.errors import GainbenchError
from gainbench.training.checkpoint import StageCheckpoint
from gainbench.training.parallel import TrainedModule, activation_checkpointing, for_training

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


# A stage's training settings are the `train:` block of the typed schema, which holds their
# defaults and checks (imported here too, so `from gainbench.training.loop import TrainSettings`
# keeps working).
from gainbench.config.schema import TrainSettings  # noqa: E402


@dataclass(frozen=True)
class StageTraining:
    steps: int
    tokens: int
    mean_loss: float
    final_loss: float
    seconds: float
    trainable_params: int | None = None
    skipped_batches: int = 0

    def rows(self) -> list[dict]:
        """The stage's training statistics as tidy rows (``eval_kind`` train, ``n`` tokens)."""
        values = {"train_loss_mean": self.mean_loss, "train_loss_final": self.final_loss,
                  "trainable_params": self.trainable_params, "train_seconds": self.seconds}
        if self.skipped_batches:  # only with train.nonfinite=skip
            values["skipped_batches"] = self.skipped_batches
        return [dict(eval_kind="train", eval_name="train", metric=k, value=float(v), n=self.tokens)
                for k, v in values.items()]


@dataclass(frozen=True)
class TrainStep:
    """One optimiser step, as ``train_stage``'s ``on_step`` receives it."""

    step: int      # steps done in this stage, 1 to ``steps``
    steps: int
    loss: float    # the global batch's LM loss
    lr: float      # the learning rate this step used
    tokens: int    # tokens in the global batch


def train_stage(model, params: dict[str, torch.nn.Parameter], blocks: torch.Tensor,
                settings: TrainSettings, seed: int, exempt_from_weight_decay: bool = False,
                regularization=None, desc: str = "train",
                checkpoint: StageCheckpoint | None = None, ranks: Ranks = Ranks(),
                on_step: Callable[[TrainStep], None] | None = None,
                progress_seconds: float = 30.0) -> StageTraining:
    """Train ``params`` of ``model`` on ``blocks`` (``[n, block_len]``), one epoch, seeded order.

    ``regularization``, if given, is called each step; a tensor it returns is added to the loss
    (e.g. GAIN's pull of the scales toward 1). The reported losses are the LM loss alone.

    Raises :class:`GainbenchError` on a non-finite loss rather than writing NaN results
    (``settings.nonfinite="skip"`` drops that batch's update instead and counts it).

    With ``checkpoint``, the stage saves its state every ``checkpoint.every`` steps and, if a
    checkpoint exists when it starts, continues from it (``gainbench.training.checkpoint``).

    Under ``ddp``/``fsdp`` each of the ``ranks`` computes its share of every global batch; the
    step, the losses and the trained ``params`` are those of one process training alone, up to
    floating-point summation order.

    ``on_step``, if given, is called after every optimiser step that updated (a skipped non-finite
    batch is not reported), on every rank. The main rank shows a progress bar on a terminal;
    without one (a SLURM log) it prints a one-line progress to stderr every ``progress_seconds``
    (0: never).
    """
    device = next(model.parameters()).device
    # Dropout draws from the global RNG: seed it here (and restore it after), so a stage trains
    # the same whoever calls it, and a resumed run matches an uninterrupted one.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        trained = for_training(model, params, settings.strategy, ranks)
        with activation_checkpointing(trained.module, settings.activation_checkpointing):
            result = _train(trained, blocks, settings, seed, exempt_from_weight_decay,
                            regularization, desc, device, checkpoint, ranks, on_step,
                            progress_seconds)
        trained.finish()
        return result


def _train(trained: TrainedModule, blocks, settings, seed, exempt_from_weight_decay,
           regularization, desc, device, checkpoint, ranks, on_step, progress_seconds) -> StageTraining:
    params = trained.params
    decay = 0.0 if exempt_from_weight_decay else settings.weight_decay
    optimizer = torch.optim.AdamW(list(params.values()), lr=settings.lr, weight_decay=decay,
                                  betas=settings.betas)
    steps = math.ceil(len(blocks) / settings.batch_size)
    scheduler = get_scheduler(settings.schedule, optimizer,
                              num_warmup_steps=int(settings.warmup_fraction * steps),
                              num_training_steps=steps)
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
    trained.module.train()
    done, losses = checkpoint.restore(params, optimizer, scheduler) if checkpoint else (0, [])
    if done and ranks.is_main:
        print(f"gainbench: {desc}: continuing from step {done}/{steps} ({checkpoint.path.name})")
    skipped, start = 0, time.perf_counter()
    progress = tqdm(range(done, steps), desc=desc, leave=False, disable=None if ranks.is_main else True)
    # tqdm draws nothing without a terminal (disable=None): a periodic line replaces it there
    lines = (ProgressLines(desc, steps, done, progress_seconds)
             if ranks.is_main and progress.disable and progress_seconds > 0 else None)
    for step in progress:
        batch = order[step * settings.batch_size:(step + 1) * settings.batch_size]
        loss = _forward_backward(trained, blocks, batch, settings, ranks, regularization, device)
        if not math.isfinite(loss):
            if settings.nonfinite == "stop":
                raise GainbenchError(_nonfinite_message(desc, loss, step, steps, settings, checkpoint))
            skipped += 1  # train.nonfinite=skip: no update from this batch; the schedule goes on
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            continue
        if settings.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(list(params.values()), settings.max_grad_norm)
        lr = optimizer.param_groups[0]["lr"]  # this step's, before the schedule moves on
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss)
        progress.set_postfix(loss=f"{losses[-1]:.3f}")
        tokens = len(batch) * blocks.shape[1]
        if lines:
            lines.update(step + 1, loss, tokens)
        if on_step:
            on_step(TrainStep(step + 1, steps, loss, lr, tokens))
        if checkpoint and checkpoint.due(step + 1, steps):  # every rank: FSDP gathers shards
            checkpoint.save(step + 1, params, optimizer, scheduler, losses)
    return StageTraining(steps, int(blocks.numel()),
                         sum(losses) / max(len(losses), 1), losses[-1] if losses else float("nan"),
                         time.perf_counter() - start, skipped_batches=skipped)


class ProgressLines:
    """One line of progress every ``every`` seconds, for logs that are not a terminal:
    ``gainbench: stage 3/8 train kjv_bible: step 40/128 loss 2.345 1,234 tokens/s ETA 1m05s``.
    Rates and ETA count the steps this process ran (not those restored from a checkpoint)."""

    def __init__(self, desc: str, steps: int, first_step: int, every: float, file=None):
        self.desc, self.steps, self.first_step, self.every = desc, steps, first_step, every
        self.file = file
        self.start = self.last = time.perf_counter()
        self.tokens = 0

    def update(self, step: int, loss: float, tokens: int) -> None:
        self.tokens += tokens
        now = time.perf_counter()
        if now - self.last < self.every:
            return
        self.last, elapsed = now, max(now - self.start, 1e-9)
        eta = elapsed / (step - self.first_step) * (self.steps - step)
        print(f"gainbench: {self.desc}: step {step}/{self.steps} loss {loss:.4f} "
              f"{self.tokens / elapsed:,.0f} tokens/s ETA {_duration(eta)}",
              file=self.file or sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _forward_backward(trained: TrainedModule, blocks, batch: torch.Tensor, settings: TrainSettings,
                      ranks: Ranks, regularization, device) -> float:
    """Accumulate the gradient of one global batch's mean loss from this rank's micro-batches;
    returns that loss (the same on every rank; NaN on every rank if any rank saw one).

    Each micro-batch's mean loss is weighted by its share of the global batch, times the number
    of ranks, which DDP/FSDP divide by when they average gradients: the sum is the gradient one
    process gets from the whole batch at once. A rank whose share is empty (a last, short batch)
    runs one block at weight 0, so every rank makes the same collective calls.
    """
    share = ranks.shard(len(batch))
    micro_batches = batch[share.start:share.stop].tensor_split(settings.grad_accum_steps)
    autocast = (torch.autocast(device.type, dtype=PRECISIONS[settings.precision])
                if PRECISIONS[settings.precision] else contextlib.nullcontext())
    # On sharded weights FSDP swaps in whole tensors during a forward pass: a penalty on the
    # weights (EWC) is taken before it, on the shards, as its gradient must reach them.
    early_penalty = trained.penalty(regularization) if trained.weights_sharded else None
    local_loss = 0.0
    for i, ids in enumerate(micro_batches):
        weight = len(ids) / len(batch)
        ids = ids if len(ids) else batch[:1]
        last = i == len(micro_batches) - 1
        tokens = blocks[ids].to(device)
        with trained.no_sync(sync=last):
            with autocast:
                loss = trained.module(input_ids=tokens, labels=tokens).loss
            objective = loss * (weight * ranks.world_size)
            if last:  # once per step and rank; DDP/FSDP average it back to once
                penalty = early_penalty if trained.weights_sharded else trained.penalty(regularization)
                if penalty is not None:
                    objective = objective + penalty
            objective.backward()
        local_loss += weight * loss.item()
    trained.sync(ranks)
    return ranks.sum(local_loss)


def _nonfinite_message(desc, loss, step, steps, settings, checkpoint) -> str:
    where = (f"; the last good state is {checkpoint.path} (rerun the same command to continue "
             f"from it)" if checkpoint and checkpoint.path.exists() else "")
    return (f"{desc}: loss is {loss} at step {step + 1}/{steps}{where}; lower train.lr "
            f"(now {settings.lr}), use model.dtype=float32, or train.nonfinite=skip to drop such "
            f"batches")

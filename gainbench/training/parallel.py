"""The module a stage trains, per ``train.strategy``, on PyTorch's own engines.

* ``single``: the model itself.
* ``ddp``: :class:`~torch.nn.parallel.DistributedDataParallel` around it; gradients are averaged
  across ranks and every rank keeps identical weights.
* ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``, per decoder layer and the whole model)
  on a *twin* of the model that shares its parameters at the start: the trained copies of the
  parameters, their gradients and the optimiser state are sharded across ranks. When the stage
  ends the trained tensors are gathered back into the model's own parameters, so absorbing,
  evaluating and saving see a plain model again.

Why not accelerate's wrappers: accelerate refuses FSDP on CPU processes (it falls back to DDP), so
its FSDP path could not be tested without GPUs; these are the same engines accelerate drives.

What the twin saves is the training state (for full fine-tuning: gradients and AdamW moments,
3x the weights in fp32); each rank still holds one full copy of the weights for evaluation and
absorption. With ``train.shard_weights=true`` the weights themselves stay sharded for the whole
run (:mod:`gainbench.training.sharding`, for models whose weights do not fit one device): the
stage trains the sharded model directly, and the tensors a method adds (GAIN's scales, LoRA's
factors) are replicated on every rank with their gradients averaged by hand
(:meth:`TrainedModule.sync`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable

import torch
import torch.nn as nn
from torch.distributed.tensor import DTensor

from gainbench.distributed import Ranks
from gainbench.errors import GainbenchError
from gainbench.training.sharding import is_sharded, shard_layers


class TrainedModule:
    """``module`` is what the stage calls and steps; ``params`` its trainable tensors (by the
    model's own names); :meth:`finish` puts the trained values into the model's parameters."""

    def __init__(self, model: nn.Module, module: nn.Module, params: dict[str, nn.Parameter],
                 finish: Callable[[], None] = lambda: None, twin_shards: bool = False,
                 replicated: list[nn.Parameter] | None = None):
        self.model = model
        self.module = module
        self.params = params
        self.finish = finish
        self.twin_shards = twin_shards  # params are fsdp's twin's shards (the penalty gathers them)
        # train.shard_weights: the model is FSDP's own, its weights whole only inside a forward
        # pass; the trainable tensors outside FSDP's reach have one copy per rank
        self.weights_sharded = replicated is not None
        self.replicated = list(replicated or ())

    def sync(self, ranks: Ranks) -> None:
        """Average the gradients of the replicated tensors across ranks (what DDP would do), once
        the step's last micro-batch is through backward."""
        for p in self.replicated:
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad.div_(ranks.world_size)

    def penalty(self, regularization: Callable[[], torch.Tensor | None] | None):
        """The method's regularization term (a function of the model), on the tensors in
        training. Under FSDP these are the twin's shards: the term is computed on the model with
        its trainable parameters swapped for the shards gathered whole (differentiably), so its
        gradient reaches the shards."""
        if regularization is None:
            return None
        if not self.twin_shards:
            if self.weights_sharded:  # the root's weights stay whole after a forward pass
                self.module.reshard()
            penalty = regularization()
            # on sharded weights (EWC): a partial sum per rank, reduced differentiably
            return penalty.full_tensor() if isinstance(penalty, DTensor) else penalty
        from torch.func import functional_call

        whole = {f"model.{name}": p.full_tensor() for name, p in self.params.items()}
        return functional_call(_Calls(self.model, regularization), whole, ())

    def no_sync(self, sync: bool):
        """Skip DDP's gradient all-reduce on a micro-batch that is not the step's last."""
        if sync or not isinstance(self.module, nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return self.module.no_sync()


class _Calls(nn.Module):
    """``fn()`` as a module holding ``model``, so functional_call can swap its parameters."""

    def __init__(self, model: nn.Module, fn: Callable):
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self):
        return self.fn()


def for_training(model: nn.Module, params: dict[str, nn.Parameter], strategy: str,
                 ranks: Ranks) -> TrainedModule:
    if strategy == "single" or ranks.world_size == 1:
        return TrainedModule(model, model, params)
    if is_sharded(model):  # train.shard_weights: FSDP already holds the weights
        return TrainedModule(model, model, params, replicated=[
            p for p in params.values() if not isinstance(p, DTensor)])
    if strategy == "ddp":
        device = next(model.parameters()).device
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None)
        return TrainedModule(model, ddp, params)
    if strategy == "fsdp":
        return _fully_sharded(model, params)
    raise GainbenchError(f"unknown train.strategy {strategy!r}")


def _fully_sharded(model: nn.Module, params: dict[str, nn.Parameter]) -> TrainedModule:
    # The twin shares every parameter object with the model (no copy), so sharding it leaves the
    # model's own full tensors in place for evaluation; buffers are small and copied.
    twin = copy.deepcopy(model, memo={id(p): p for p in model.parameters()})
    shard_layers(twin)
    sharded = {name: p for name, p in twin.named_parameters() if name in params}
    if set(sharded) != set(params):
        raise GainbenchError(f"fsdp: trainable tensors {sorted(set(params) - set(sharded))[:3]} were "
                             "not found in the sharded model; use train.strategy=ddp for this method")

    @torch.no_grad()
    def finish():
        for name, p in sharded.items():
            params[name].copy_(p.full_tensor())

    return TrainedModule(model, twin, sharded, finish, twin_shards=True)


def activation_checkpointing(model: nn.Module, enabled: bool):
    """Recompute each decoder layer's activations in backward instead of keeping them
    (HF's gradient checkpointing, non-reentrant so frozen inputs need no grad)."""
    from transformers import PreTrainedModel

    hf = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    if not enabled:
        return contextlib.nullcontext()
    if hf is None or not hf.supports_gradient_checkpointing:
        raise GainbenchError("train.activation_checkpointing=true needs a transformers model that "
                             "supports gradient checkpointing; set it to false for this model")

    @contextlib.contextmanager
    def enabled_for_the_stage():
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        try:
            yield
        finally:
            hf.gradient_checkpointing_disable()

    return enabled_for_the_stage()

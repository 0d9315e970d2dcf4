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
run (:func:`shard_model`, for models whose weights do not fit one device): the stage trains the
sharded model directly, and the tensors a method adds (GAIN's scales, LoRA's factors) are
replicated on every rank with their gradients averaged by hand (:meth:`TrainedModule.sync`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable

import torch
import torch.nn as nn

from torch.distributed.tensor import DTensor, distribute_tensor

from gainbench.distributed import Ranks
from gainbench.errors import GainbenchError


class TrainedModule:
    """``module`` is what the stage calls and steps; ``params`` its trainable tensors (by the
    model's own names); :meth:`finish` puts the trained values into the model's parameters."""

    def __init__(self, model: nn.Module, module: nn.Module, params: dict[str, nn.Parameter],
                 finish: Callable[[], None] = lambda: None, sharded: bool = False,
                 replicated: list[nn.Parameter] | None = None):
        self.model = model
        self.module = module
        self.params = params
        self.finish = finish
        self.sharded = sharded  # params are a twin's shards (the penalty needs them gathered)
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
        if not self.sharded:
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
    _shard_layers(twin)
    sharded = {name: p for name, p in twin.named_parameters() if name in params}
    if set(sharded) != set(params):
        raise GainbenchError(f"fsdp: trainable tensors {sorted(set(params) - set(sharded))[:3]} were "
                             "not found in the sharded model; use train.strategy=ddp for this method")

    @torch.no_grad()
    def finish():
        for name, p in sharded.items():
            params[name].copy_(p.full_tensor())

    return TrainedModule(model, twin, sharded, finish, sharded=True)


def shard_model(loaded: nn.Module | None, ranks: Ranks, device: torch.device,
                trust_remote_code: bool = False) -> nn.Module:
    """The model with its weights sharded across ranks (FSDP2, per decoder layer), for the run.

    Only rank 0 passes the ``loaded`` model (on the CPU); the other ranks pass None and never
    hold the whole weights: every rank builds the architecture on the meta device, shards it,
    and receives its shard of rank 0's weights (torch.distributed.checkpoint's broadcast).
    Buffers (e.g. rotary frequencies, not in the state dict) are broadcast as they are.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from transformers import AutoModelForCausalLM

    config, generation_config, dtype = ranks.broadcast(
        (loaded.config, loaded.generation_config, next(loaded.parameters()).dtype)
        if ranks.is_main else None)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    model.to(dtype).eval()
    model.generation_config = generation_config
    _shard_layers(model)
    model.to_empty(device=device)
    full = loaded.state_dict() if ranks.is_main else {}
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True,
                                                               broadcast_from_rank0=True))
    loaded_buffers = dict(loaded.named_buffers()) if ranks.is_main else {}
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if ranks.is_main:
                buffer.copy_(loaded_buffers[name])
            ranks.broadcast_tensor(buffer)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model``'s weights are sharded across ranks (``train.shard_weights``): every rank
    must then run each forward pass together with the others."""
    return any(isinstance(p, DTensor) for p in model.parameters())


def _reshard(model: nn.Module) -> None:
    """Every FSDP unit of ``model`` back to holding only its shards (FSDP leaves the root's weights
    gathered after a forward pass without backward, e.g. evaluation). Before a method attaches
    or edits weights: what it finds must be the shards that FSDP gathers and the optimiser steps,
    not a temporary whole copy."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


@contextlib.contextmanager
def on_sharded_weights(model: nn.Module):
    """Around weight edits (attaching, absorbing, merging, replaying a stage) on sharded weights:
    a plain tensor meeting a sharded weight counts as the same tensor on every rank, so
    ``W *= s`` or PEFT's ``W += B @ A`` updates each rank's rows of ``W`` in place.

    Only in-place edits are kept: an assignment ``W.data = ...`` leaves the shards FSDP gathers
    unchanged, so a method that edits that way sets ``supports_sharded_weights = False``."""
    if not is_sharded(model):
        yield
        return
    from torch.distributed.tensor.experimental import implicit_replication

    _reshard(model)
    with implicit_replication():
        yield


class OffloadedShard:
    """This rank's part of a sharded tensor, copied to the CPU (e.g. the base weights the
    column-span diagnostic compares against), to be gathered whole later with :func:`whole`."""

    def __init__(self, tensor: DTensor):
        local = tensor.to_local().detach()
        self.device = local.device
        self.local = local.to("cpu", copy=True)
        self.mesh, self.placements = tensor.device_mesh, tensor.placements
        self.shape, self.stride = tensor.shape, tensor.stride()

    def whole(self) -> torch.Tensor:
        sharded = DTensor.from_local(self.local.to(self.device), self.mesh, self.placements,
                                     shape=self.shape, stride=self.stride)
        return sharded.full_tensor()


def whole(tensor) -> torch.Tensor:
    """``tensor`` whole: a sharded one (:class:`DTensor`, :class:`OffloadedShard`) gathered from
    every rank (a collective: every rank calls it), a plain one as it is."""
    if isinstance(tensor, OffloadedShard):
        return tensor.whole()
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def detached_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU copy of a plain tensor; a sharded one detached where it is, since gathering it
    whole is a collective on its device (the caller's, with :func:`gathered`)."""
    return tensor.detach() if isinstance(tensor, DTensor) else tensor.detach().cpu().clone()


def gathered(tensors: dict, keep: bool = True) -> dict:
    """CPU copies of the tensors in ``tensors`` (other values as they are), each sharded one
    gathered whole first: every rank calls this, since gathering is a collective; ``keep=False``
    ranks drop each copy at once and get an empty dict, so only one rank ever holds them all."""
    out = {}
    for name, value in tensors.items():
        value = whole(value)
        if keep:
            out[name] = value.detach().cpu().clone() if isinstance(value, torch.Tensor) else value
    return out


def shaped_like(saved: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``saved`` (a whole tensor, the same on every rank) on ``like``'s device and dtype, and
    sharded as ``like`` is: each rank keeps its own part, without communication."""
    if isinstance(like, DTensor):
        local = like.to_local()
        return distribute_tensor(saved.to(local.device, local.dtype), like.device_mesh,
                                 like.placements, src_data_rank=None)
    return saved.to(like.device, like.dtype)


def _shard_layers(model: nn.Module) -> None:
    """FSDP2 on each decoder layer (one unit of gathering each), then on the whole model."""
    from torch.distributed.fsdp import fully_shard

    layers = _decoder_layer_classes(model)
    for module in model.modules():
        if type(module).__name__ in layers:
            fully_shard(module)
    fully_shard(model)


def _decoder_layer_classes(model: nn.Module) -> set[str]:
    """The class names HF marks as not to be split (the decoder layers): one FSDP unit each."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel) and module._no_split_modules:
            return set(module._no_split_modules)
    return set()


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

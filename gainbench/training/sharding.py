"""Weights sharded across ranks for the whole run (``train.shard_weights=true``, with FSDP2),
and the helpers every sharded tensor needs: gathering one whole, re-sharding a whole one, and
editing sharded weights in place.

Gathering a sharded tensor (a :class:`~torch.distributed.tensor.DTensor`) is a collective: every
rank calls the same helpers in the same order, and only the rank that needs the result keeps it.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn as nn
from torch.distributed.tensor import DTensor, distribute_tensor

from gainbench.distributed import Ranks


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
    shard_layers(model)
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


def is_sharded_tensor(tensor) -> bool:
    return isinstance(tensor, DTensor)


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


def shard_layers(model: nn.Module) -> None:
    """FSDP2 on each decoder layer (one unit of gathering each), then on the whole model."""
    from torch.distributed.fsdp import fully_shard

    layers = _decoder_layer_classes(model)
    if not layers:
        warnings.warn(f"{type(model).__name__} names no decoder-layer class (_no_split_modules): "
                      "FSDP shards it as one unit, so each forward pass gathers every weight at "
                      "once", stacklevel=2)
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

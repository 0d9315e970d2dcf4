"""The interface every adaptation method implements, and the registry that names them.

A method knows nothing of stages or sequences. Per stage the protocol calls::

    trainable = method.attach(model)         # fresh adapter / fresh s = 1; returns the model to train
    blocks = method.training_blocks(own, earlier, seed)     # what it trains on (e.g. replay)
    ...train method.trainable_parameters(trainable), adding method.regularization(trainable)...
    method.after_training(trainable, blocks, batch_size)   # e.g. EWC's Fisher
    state = method.stage_state(trainable)    # small tensors that reproduce this stage (for resume)
    model = method.absorb(trainable)         # plain HF model again, same names and count

and on resume, ``method.replay(model, state, placement)`` re-applies a finished stage exactly.
Between ``stage_state`` and ``absorb``, with ``save_adapters``, ``method.export_adapter(trainable,
folder, state)`` writes the stage's adapter in its library's own format (PEFT methods only).
The evaluators ask a method two more things: :meth:`effective_weight` (the weight a linear module
computes with, for the column-span diagnostic) and :attr:`update_composition` (how two stages'
updates combine in the figure analyses).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn

from gainbench.errors import GainbenchError
from gainbench.placement import SINGLE_PROCESS, Placement

METHODS: dict[str, type[Method]] = {}


def register(name: str):
    def decorate(cls):
        cls.name = name
        METHODS[name] = cls
        return cls
    return decorate


def make_method(name: str, **options) -> Method:
    if name not in METHODS:
        raise GainbenchError(f"unknown method '{name}'; known methods: {', '.join(sorted(METHODS))} "
                             "(add one as gainbench/methods/<name>.py plus configs/method/<name>.yaml)")
    try:
        return METHODS[name](**options)
    except TypeError as err:
        raise GainbenchError(f"method '{name}': bad option ({err}); see configs/method/{name}.yaml") from None


class Method:
    name: ClassVar[str]
    # AdamW decay pulls toward 0, which is wrong for a multiplicative scale centred on 1.
    exempt_from_weight_decay: ClassVar[bool] = False
    # True when stage_state is the whole model (full FT): resume needs only the latest one.
    state_is_full_model: ClassVar[bool] = False
    # False when attaching needs the whole weights at once (train.shard_weights refuses it).
    supports_sharded_weights: ClassVar[bool] = True
    # How two stages' updates combine in the figure analyses: "additive" (W0 + a dW_A + b dW_B)
    # or "multiplicative" (diag(s_A^a s_B^b) W0, from the stages' saved scales).
    update_composition: ClassVar[str] = "additive"

    def attach(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def absorb(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def trainable_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def regularization(self, model: nn.Module) -> torch.Tensor | None:
        """A penalty added to this step's training loss (e.g. pulling GAIN scales to 1), or None."""
        return None

    def training_blocks(self, blocks: torch.Tensor, earlier: list[torch.Tensor],
                        seed: int) -> torch.Tensor:
        """The blocks a stage trains on, given its own domain's ``blocks`` and the earlier
        domains' training blocks (``earlier``, oldest first): its own, unless the method mixes
        in other text (replay)."""
        return blocks

    def after_training(self, model: nn.Module, blocks: torch.Tensor, batch_size: int) -> None:
        """Called once a stage's training ends, before its state is saved (e.g. EWC's Fisher)."""

    def stage_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The trained tensors, detached (the protocol copies them off the device at once,
        gathering sharded ones, before anything changes them)."""
        return {n: p.detach() for n, p in self.trainable_parameters(model).items()}

    def export_adapter(self, model: nn.Module, folder: Path,
                       state: Mapping[str, torch.Tensor]) -> bool:
        """Write the trained adapter of ``model`` (attached, not yet absorbed), whose tensors are
        ``state`` (:meth:`stage_state`, whole), into the empty ``folder``, in a format its
        library reads back; False, writing nothing, for a method without one (the default)."""
        return False

    def effective_weight(self, module: nn.Module) -> torch.Tensor:
        """The weight ``module`` (a linear layer of the model) computes with, detached."""
        return module.weight.detach()

    def replay(self, model: nn.Module, state: Mapping[str, torch.Tensor],
               placement: Placement = SINGLE_PROCESS) -> nn.Module:
        """Re-apply a finished stage: attach, load its trained tensors, absorb."""
        attached = self.attach(model)
        params = self.trainable_parameters(attached)
        missing = set(params) ^ set(state)
        if missing:
            raise GainbenchError(f"saved stage state does not fit method '{self.name}' "
                                 f"(mismatched tensors: {sorted(missing)[:3]}); delete the run folder "
                                 "to start over")
        with torch.no_grad():
            for name, param in params.items():  # one tensor read at a time
                param.copy_(placement.shaped_like(state[name], param))
        return self.absorb(attached)


def count_parameters(params) -> int:
    return sum(p.numel() for p in params)

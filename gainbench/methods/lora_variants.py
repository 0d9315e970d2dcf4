"""LoRA baselines of the paper's revised version: DoRA (PEFT), LoRA with an L2 penalty on its
update, and LoRA with replay of earlier domains' text."""

from __future__ import annotations

import torch
import torch.nn as nn

from gainbench.data.replay import mix_in_replay
from gainbench.errors import GainbenchError
from gainbench.methods.base import register
from gainbench.methods.peft_methods import LoRA


@register("dora")
class DoRA(LoRA):
    """PEFT's weight-decomposed LoRA (``use_dora=True``): magnitude vector plus low-rank direction."""

    use_dora = True
    # PEFT initialises the magnitude from the norms of the whole weight matrix, at attach time
    supports_sharded_weights = False


@register("lora_l2")
class LoRAL2(LoRA):
    """LoRA plus ``l2 * sum over adapted matrices of ||(alpha/r) B A||_F^2``.

    The penalty is on the update the merge will add to the weights, so ``l2`` traces the
    forgetting/adaptation trade-off (the paper's Figure 2): ``l2 = 0`` is plain LoRA.
    """

    def __init__(self, l2: float = 1.0, **lora_options):
        super().__init__(**lora_options)
        if not l2 >= 0:
            raise GainbenchError(f"method.options.l2 must be >= 0, got {l2}")
        self.l2 = float(l2)

    def regularization(self, model: nn.Module) -> torch.Tensor | None:
        if self.l2 == 0:
            return None
        from peft.tuners.lora import LoraLayer

        total = None
        for module in model.modules():
            if isinstance(module, LoraLayer) and "default" in module.lora_A:
                a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
                delta = module.scaling["default"] * (b @ a)
                total = delta.pow(2).sum() if total is None else total + delta.pow(2).sum()
        return None if total is None else self.l2 * total


@register("replay_lora")
class ReplayLoRA(LoRA):
    """LoRA trained on a mix: ``replay_fraction`` of each stage's blocks are drawn from the
    earlier domains' training blocks (the token budget stays the same, so compute matches the
    other methods)."""

    def __init__(self, replay_fraction: float = 0.25, **lora_options):
        super().__init__(**lora_options)
        if not 0 <= replay_fraction < 1:
            raise GainbenchError(f"method.options.replay_fraction must be in [0, 1), got {replay_fraction}")
        self.replay_fraction = float(replay_fraction)

    def training_blocks(self, blocks: torch.Tensor, earlier: list[torch.Tensor],
                        seed: int) -> torch.Tensor:
        if not self.replay_fraction:
            return blocks
        return mix_in_replay(blocks, earlier, self.replay_fraction, seed=seed)

"""The matched study's LoRA baselines adapt the modules their names promise, on both tiny
families (Llama's nn.Linear and GPT-2's Conv1D)."""

import pytest

from gainbench.methods import make_method
from gainbench.models.architectures import resolve_targets


def _adapted(model) -> set[str]:
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    return {name.removeprefix(prefix) for name, module in model.named_modules()
            if isinstance(module, LoraLayer)}


@pytest.mark.parametrize("method, roles", [("lora_gain_modules", ["attn_out", "ffn_down"]),
                                           ("lora_all", ["block_linear"])])
def test_lora_adapts_the_modules_its_roles_name(method, roles, tiny_model):
    expected = set(resolve_targets(tiny_model, roles))   # the modules GAIN-FFN / the diagnostic name
    assert _adapted(make_method(method).attach(tiny_model)) == expected


def test_lora_all_covers_every_block_matrix_and_not_the_head(tiny_model):
    adapted = _adapted(make_method("lora_all").attach(tiny_model))
    assert len(adapted) == {"llama": 14, "gpt2": 8}[tiny_model.config.model_type]  # 2 blocks x 7 or 4
    assert not any("lm_head" in name for name in adapted)

"""GAIN's numerics: absorption equivalence, parameter names and counts, PEFT (IA)^3 cross-check."""

import pytest
import torch

from gainbench.methods.gain import GainScaled, absorb_gain, apply_gain
from gainbench.models.architectures import resolve_targets


def _randomise_scales(scales, seed=0):
    g = torch.Generator().manual_seed(seed)
    for s in scales.values():
        s.data = 0.5 + torch.rand(s.shape, generator=g)  # non-identity, in [0.5, 1.5)


@pytest.mark.parametrize("targets", [["attn_out"], ["attn_out", "ffn_down"]])
@pytest.mark.parametrize("side", ["output", "input"])
def test_absorbed_model_computes_the_same_logits(tiny_model, token_batch, targets, side):
    names_before = [n for n, _ in tiny_model.named_parameters()]
    count_before = sum(p.numel() for p in tiny_model.parameters())
    scales = apply_gain(tiny_model, targets, side)
    _randomise_scales(scales)
    with torch.no_grad():
        wrapped_logits = tiny_model(token_batch).logits
    assert absorb_gain(tiny_model) == len(scales)
    with torch.no_grad():
        absorbed_logits = tiny_model(token_batch).logits
    torch.testing.assert_close(absorbed_logits, wrapped_logits, rtol=1e-5, atol=1e-5)
    assert [n for n, _ in tiny_model.named_parameters()] == names_before
    assert sum(p.numel() for p in tiny_model.parameters()) == count_before
    assert not any(isinstance(m, GainScaled) for m in tiny_model.modules())


def test_scale_changes_the_output_before_absorption(tiny_model, token_batch):
    with torch.no_grad():
        base = tiny_model(token_batch).logits
    _randomise_scales(apply_gain(tiny_model, ["attn_out", "ffn_down"]))
    with torch.no_grad():
        scaled = tiny_model(token_batch).logits
    assert (scaled - base).abs().max() > 1e-3  # the equivalence test above is not vacuous


def test_identity_scale_leaves_the_model_unchanged(tiny_model, token_batch):
    with torch.no_grad():
        base = tiny_model(token_batch).logits
    apply_gain(tiny_model, ["attn_out", "ffn_down"])
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(token_batch).logits, base)


def test_trainable_count_is_one_vector_per_wrapped_matrix(tiny_model):
    d_model = tiny_model.config.hidden_size
    layers = tiny_model.config.num_hidden_layers
    scales = apply_gain(tiny_model, ["attn_out", "ffn_down"])
    assert sum(s.numel() for s in scales.values()) == 2 * layers * d_model
    trainable = [p for p in tiny_model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == 2 * layers * d_model


def test_ffn_scale_on_the_input_side_has_intermediate_width(tiny_model):
    scales = apply_gain(tiny_model, ["ffn_down"], side="input")
    intermediate = getattr(tiny_model.config, "intermediate_size", None) or 4 * tiny_model.config.n_embd
    assert {s.numel() for s in scales.values()} == {intermediate}


def test_scale_is_fp32_in_a_bf16_model(tiny_model, token_batch):
    tiny_model.to(torch.bfloat16)
    scales = apply_gain(tiny_model, ["attn_out"])
    assert all(s.dtype == torch.float32 for s in scales.values())
    tiny_model(token_batch).logits.float().sum().backward()
    assert all(s.grad is not None and s.grad.dtype == torch.float32 for s in scales.values())


def test_absorbed_weights_match_peft_ia3_merge(tiny_model):
    """(IA)^3 scales the same outputs by a ones-initialised vector: an independent implementation."""
    from peft import IA3Config, get_peft_model

    reference = type(tiny_model)(tiny_model.config)
    reference.load_state_dict(tiny_model.state_dict())
    targets = list(resolve_targets(tiny_model, ["attn_out"]))
    suffix = targets[0].split(".", 3)[-1]  # e.g. self_attn.o_proj / attn.c_proj

    scales = apply_gain(tiny_model, ["attn_out"])
    _randomise_scales(scales)
    absorb_gain(tiny_model)

    is_gpt2 = tiny_model.config.model_type == "gpt2"
    peft_model = get_peft_model(reference, IA3Config(
        target_modules=[suffix], feedforward_modules=[], fan_in_fan_out=is_gpt2))
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            if hasattr(module, "ia3_l") and name.split("base_model.model.")[-1] in scales:
                module.ia3_l["default"].copy_(scales[name.split("base_model.model.")[-1]].view_as(
                    module.ia3_l["default"]))
    merged = peft_model.merge_and_unload()
    for (name, ours), theirs in zip(tiny_model.state_dict().items(), merged.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6, msg=name)

"""Per-family module roles: every family in ROLE_SUFFIXES, on a tiny random model built from its config.

The expected module names are written out here, independently of ROLE_SUFFIXES, from the transformers
modeling code (a rename upstream then fails here rather than silently wrapping nothing).
"""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from gainbench.errors import GainbenchError
from gainbench.methods import absorb_gain, apply_gain, count_parameters, make_method
from gainbench.methods.gain import GainScaled
from gainbench.models.architectures import ROLE_SUFFIXES, resolve_targets

LAYERS, WIDTH, FFN = 2, 32, 64
_DECODER = dict(hidden_size=WIDTH, intermediate_size=FFN, num_hidden_layers=LAYERS,
                num_attention_heads=4, num_key_value_heads=2)

# model_type -> (tiny config kwargs, block prefix, attention output, FFN down projection)
FAMILIES = {
    "llama": (_DECODER, "model.layers", "self_attn.o_proj", "mlp.down_proj"),
    "mistral": (_DECODER, "model.layers", "self_attn.o_proj", "mlp.down_proj"),
    "qwen2": (_DECODER, "model.layers", "self_attn.o_proj", "mlp.down_proj"),
    "qwen3": (dict(_DECODER, head_dim=8), "model.layers", "self_attn.o_proj", "mlp.down_proj"),
    # fused qkv_proj and gate_up_proj; the output projections keep Llama's names
    "phi3": (_DECODER, "model.layers", "self_attn.o_proj", "mlp.down_proj"),
    "gemma": (dict(_DECODER, head_dim=8), "model.layers", "self_attn.o_proj", "mlp.down_proj"),
    "gemma2": (dict(_DECODER, head_dim=8), "model.layers", "self_attn.o_proj", "mlp.down_proj"),
    # Conv1D, weight stored [in, out]
    "gpt2": (dict(n_embd=WIDTH, n_inner=FFN, n_layer=LAYERS, n_head=4, n_positions=64),
             "transformer.h", "attn.c_proj", "mlp.c_proj"),
    "gpt_neox": (dict(hidden_size=WIDTH, intermediate_size=FFN, num_hidden_layers=LAYERS,
                      num_attention_heads=4), "gpt_neox.layers", "attention.dense", "mlp.dense_4h_to_h"),
    # the FFN sits directly in the decoder layer, not in an mlp submodule
    "opt": (dict(hidden_size=WIDTH, ffn_dim=FFN, word_embed_proj_dim=WIDTH, num_hidden_layers=LAYERS,
                 num_attention_heads=4, max_position_embeddings=64),
            "model.decoder.layers", "self_attn.out_proj", "fc2"),
    # FalconLinear subclasses nn.Linear; bias=True exercises bias absorption
    "falcon": (dict(hidden_size=WIDTH, ffn_hidden_size=FFN, num_hidden_layers=LAYERS,
                    num_attention_heads=4, bias=True),
               "transformer.h", "self_attention.dense", "mlp.dense_4h_to_h"),
}


def tiny(model_type):
    kwargs = dict(FAMILIES[model_type][0], vocab_size=128, bos_token_id=0, eos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kwargs)).eval()


def _batch():
    return torch.randint(2, 128, (2, 12), generator=torch.Generator().manual_seed(0))


def test_every_known_family_is_tested_here():
    assert set(ROLE_SUFFIXES) == set(FAMILIES)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_roles_resolve_to_the_family_modules(model_type):
    _, prefix, attn_out, ffn_down = FAMILIES[model_type]
    model = tiny(model_type)
    for role, suffix in (("attn_out", attn_out), ("ffn_down", ffn_down)):
        modules = resolve_targets(model, [role])
        assert list(modules) == [f"{prefix}.{i}.{suffix}" for i in range(LAYERS)]
        assert all(isinstance(m, (torch.nn.Linear, Conv1D)) for m in modules.values())
    assert model.config.model_type == model_type


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
@pytest.mark.parametrize("side", ["output", {"ffn_down": "input"}], ids=["output", "ffn-input"])
def test_absorbed_model_equals_the_scaled_one(model_type, side):
    model = tiny(model_type)
    batch = _batch()
    names_before = [n for n, _ in model.named_parameters()]
    with torch.no_grad():
        base = model(batch).logits
    scales = apply_gain(model, ["attn_out", "ffn_down"], side)
    g = torch.Generator().manual_seed(1)
    for s in scales.values():
        s.data = 0.5 + torch.rand(s.shape, generator=g)  # non-identity, in [0.5, 1.5)
    with torch.no_grad():
        scaled = model(batch).logits
    assert absorb_gain(model) == 2 * LAYERS
    with torch.no_grad():
        absorbed = model(batch).logits
    assert (scaled - base).abs().max() > 1e-4  # the scales do act
    torch.testing.assert_close(absorbed, scaled, rtol=1e-5, atol=1e-5)
    assert [n for n, _ in model.named_parameters()] == names_before


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_trainable_counts(model_type):
    counts = {}
    for name, options in (("gain", {}), ("gain_ffn", {}), ("ffn_input", {"side": {"ffn_down": "input"}})):
        method = make_method("gain" if name == "gain" else "gain_ffn", **options)
        counts[name] = count_parameters(method.trainable_parameters(method.attach(tiny(model_type))).values())
    assert counts == {"gain": LAYERS * WIDTH, "gain_ffn": 2 * LAYERS * WIDTH,
                      "ffn_input": LAYERS * (WIDTH + FFN)}


def _mystery_model():
    model = tiny("llama")
    model.config.model_type = "mystery"
    return model


def test_unknown_architecture_lists_one_block_and_the_config_key():
    with pytest.raises(GainbenchError) as err:
        resolve_targets(_mystery_model(), ["attn_out"])
    message = str(err.value)
    assert "'mystery'" in message and "method.options.targets" in message
    for module in ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"):
        assert module in message
    assert "model.layers.0" not in message and "layers.1" not in message  # one block, prefix stripped


def test_explicit_suffixes_work_on_an_unknown_architecture():
    model = _mystery_model()
    method = make_method("gain_ffn", targets=["self_attn.o_proj", "mlp.down_proj"])
    params = method.trainable_parameters(method.attach(model))
    assert list(params) == [f"model.layers.{i}.{m}.scale" for i in range(LAYERS)
                            for m in ("self_attn.o_proj", "mlp.down_proj")]
    assert count_parameters(params.values()) == 2 * LAYERS * WIDTH
    method.absorb(model)
    assert not any(isinstance(m, GainScaled) for m in model.modules())


def test_a_suffix_that_matches_nothing_says_what_exists():
    with pytest.raises(GainbenchError, match=r"'self_attn\.out_proj'.*method\.options\.targets.*o_proj"):
        resolve_targets(tiny("llama"), ["self_attn.out_proj"])

"""Every family gainbench lists runs every registered method, end to end on a tiny random model.

For each (family, method): attach, train two steps, stage_state, absorb; the absorbed model is the
plain architecture again with the same parameter names, computes what the trained adapted model
computed, and replaying the saved state on a copy of the base model gives the same weights. This is
the matrix a user's ``model=... method=...`` picks from; a pair that cannot run must say so in one
line (GainbenchError), never with a library traceback.
"""

import copy

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from gainbench.errors import GainbenchError
from gainbench.methods import METHODS, make_method
from gainbench.models.architectures import ATTN_QV_SUFFIXES, ROLE_SUFFIXES, resolve_targets
from tests.conftest import train_a_little

VOCAB, LAYERS, WIDTH, FFN = 300, 2, 64, 128
_DECODER = dict(hidden_size=WIDTH, intermediate_size=FFN, num_hidden_layers=LAYERS,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)

# model_type -> tiny config kwargs (each family's own key names for the same sizes)
TINY_CONFIGS = {
    "llama": _DECODER,
    "mistral": _DECODER,
    "qwen2": _DECODER,
    "qwen3": dict(_DECODER, head_dim=16),
    "phi3": _DECODER,
    "gemma": dict(_DECODER, head_dim=16),
    "gemma2": dict(_DECODER, head_dim=16),
    "gpt2": dict(n_embd=WIDTH, n_inner=FFN, n_layer=LAYERS, n_head=4, n_positions=64),
    "gpt_neox": dict(hidden_size=WIDTH, intermediate_size=FFN, num_hidden_layers=LAYERS,
                     num_attention_heads=4, max_position_embeddings=64),
    "opt": dict(hidden_size=WIDTH, ffn_dim=FFN, word_embed_proj_dim=WIDTH, num_hidden_layers=LAYERS,
                num_attention_heads=4, max_position_embeddings=64),
    "falcon": dict(hidden_size=WIDTH, ffn_hidden_size=FFN, num_hidden_layers=LAYERS,
                   num_attention_heads=4, bias=True),
}

# No dropout, so the adapted model's logits are a deterministic function to compare against.
OPTIONS = {name: {"dropout": 0.0} for name in ("lora", "dora", "lora_l2", "replay_lora",
                                              "lora_gain_modules", "lora_all")}


def test_every_listed_family_is_built_here():
    assert set(TINY_CONFIGS) == set(ROLE_SUFFIXES) == set(ATTN_QV_SUFFIXES)


def _tiny(model_type):
    config = AutoConfig.for_model(model_type, vocab_size=VOCAB, bos_token_id=0, eos_token_id=1,
                                  pad_token_id=0, **TINY_CONFIGS[model_type])
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module", params=sorted(TINY_CONFIGS))
def family_model(request):
    """The family's tiny base model, built once per module; each test works on a deep copy."""
    return _tiny(request.param)


def _batch():
    return torch.randint(2, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_family_runs_method(family_model, name):
    base = family_model
    architecture, names_before = type(base), [n for n, _ in base.named_parameters()]
    batch = _batch()
    with torch.no_grad():
        base_logits = base(batch).logits

    torch.manual_seed(0)
    method = make_method(name, **OPTIONS.get(name, {}))
    adapted = method.attach(copy.deepcopy(base))
    train_a_little(adapted, method, batch, steps=2)
    method.after_training(adapted, batch, batch_size=2)
    state = {k: v.clone() for k, v in method.stage_state(adapted).items()}
    with torch.no_grad():
        adapted_logits = adapted(batch).logits
    absorbed = method.absorb(adapted)

    assert type(absorbed) is architecture  # plain HF again: no PEFT or GAIN wrapper left
    assert not any(type(m).__module__.startswith(("peft.", "gainbench.")) for m in absorbed.modules())
    assert [n for n, _ in absorbed.named_parameters()] == names_before
    assert (adapted_logits - base_logits).abs().max() > 1e-4  # training moved something
    with torch.no_grad():
        torch.testing.assert_close(absorbed(batch).logits, adapted_logits, rtol=1e-4, atol=1e-4)

    replayed = make_method(name, **OPTIONS.get(name, {})).replay(copy.deepcopy(base), state)
    for (key, a), b in zip(absorbed.state_dict().items(), replayed.state_dict().values()):
        assert torch.equal(a, b), key


def test_attn_qv_agrees_with_peft_where_peft_has_a_default():
    """The fallback is PEFT's own recipe, written for the families PEFT leaves out."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_LORA

    for model_type, suffixes in ATTN_QV_SUFFIXES.items():
        if model_type in PEFT_LORA:
            assert {s.split(".")[-1] for s in suffixes} == set(PEFT_LORA[model_type]), model_type


def test_lora_without_targets_adapts_the_attention_input_projections(family_model):
    """PEFT's default where it has one, ``attn_qv`` where it has none: the same modules."""
    from peft.tuners.lora import LoraLayer

    method = make_method("lora", dropout=0.0)
    adapted = method.attach(copy.deepcopy(family_model))
    lora_modules = [n.removeprefix("base_model.model.") for n, m in adapted.named_modules()
                    if isinstance(m, LoraLayer)]
    expected = list(resolve_targets(family_model, ["attn_qv"]))
    assert sorted(lora_modules) == sorted(expected) and len(expected) >= LAYERS


def test_ia3_peft_on_phi3_scales_qkv_outputs_and_the_ffn_down_input():
    from peft.tuners.ia3 import IA3Layer

    adapted = make_method("ia3_peft").attach(_tiny("phi3"))
    layers = {n.removeprefix("base_model.model.model.layers.0."): m.is_feedforward
              for n, m in adapted.named_modules() if isinstance(m, IA3Layer) and ".layers.0." in n}
    assert layers == {"self_attn.qkv_proj": False, "mlp.down_proj": True}


def _mystery_model():
    model = _tiny("llama")
    model.config.model_type = "mystery"  # a family neither PEFT nor gainbench knows
    return model


@pytest.mark.parametrize("name, options, listed", [
    # no targets: PEFT has no default for the family, nor has gainbench
    *[(name, {}, "self_attn.q_proj") for name in ("lora", "dora", "lora_l2", "replay_lora", "ia3_peft")],
    # roles: the family's attention output is unknown
    *[(name, {"targets": ["attn_out"]}, "self_attn.o_proj") for name in ("lora", "ia3")],
])
def test_an_unknown_family_is_one_line_naming_method_and_fix(name, options, listed):
    with pytest.raises(GainbenchError) as err:
        make_method(name, **options).attach(_mystery_model())
    message = str(err.value)
    assert "\n" not in message
    assert f"method '{name}'" in message and "'mystery'" in message
    assert "method.options.targets" in message and listed in message


@pytest.mark.parametrize("name", ["lora", "ia3"])
def test_targets_peft_cannot_find_are_one_line_not_a_peft_traceback(name):
    with pytest.raises(GainbenchError) as err:
        make_method(name, targets=["self_attn.qkv_proj"]).attach(_tiny("llama"))
    message = str(err.value)
    assert "\n" not in message
    assert f"method '{name}'" in message and "llama" in message and "qkv_proj" in message
    assert "method.options.targets" in message and "self_attn.o_proj" in message


def test_explicit_attn_qv_role_works_for_lora_and_gain(family_model):
    for name in ("lora", "gain"):
        method = make_method(name, targets=["attn_qv"])
        assert method.trainable_parameters(method.attach(copy.deepcopy(family_model)))

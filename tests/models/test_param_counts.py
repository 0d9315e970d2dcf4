"""Exact GAIN parameter counts of the paper's models, built on the meta device (no download, no memory).

Each config is written out from the model's published ``config.json``; the total parameter count of
the built model is asserted too, so a wrong dimension here cannot go unnoticed.
"""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from gainbench.methods import absorb_gain, count_parameters, make_method
from gainbench.methods.gain import GainScaled

PAPER_MODELS = {
    # openai-community/gpt2-large
    "gpt2-large": dict(model_type="gpt2", vocab_size=50257, n_positions=1024, n_embd=1280, n_layer=36,
                       n_head=20),  # n_inner unset: 4 * 1280 = 5120
    # Qwen/Qwen2.5-7B
    "qwen2.5-7b": dict(model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                       num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       max_position_embeddings=131072, tie_word_embeddings=False),
    # mistralai/Mistral-7B-v0.1
    "mistral-7b": dict(model_type="mistral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       max_position_embeddings=32768, tie_word_embeddings=False),
    # meta-llama/Llama-2-13b-hf
    "llama2-13b": dict(model_type="llama", vocab_size=32000, hidden_size=5120, intermediate_size=13824,
                       num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40,
                       max_position_embeddings=4096, tie_word_embeddings=False),
    # meta-llama/Llama-2-70b-hf
    "llama2-70b": dict(model_type="llama", vocab_size=32000, hidden_size=8192, intermediate_size=28672,
                       num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                       max_position_embeddings=4096, tie_word_embeddings=False),
}

# the published totals (HF model cards / safetensors metadata): a check on the dimensions above
TOTAL = {"gpt2-large": 774_030_080, "qwen2.5-7b": 7_615_616_512, "mistral-7b": 7_241_732_096,
         "llama2-13b": 13_015_864_320, "llama2-70b": 68_976_648_192}

# (model, method, options) -> trainable count; DESIGN.md section 2
EXPECTED = [
    ("gpt2-large", "gain", {}, 46_080),                                    # 36 x 1280, the paper's "46K"
    ("gpt2-large", "gain_ffn", {}, 92_160),
    ("gpt2-large", "gain_ffn", {"side": {"ffn_down": "input"}}, 230_400),  # + 36 x 5120: the "230K"
    ("qwen2.5-7b", "gain", {}, 100_352),
    ("qwen2.5-7b", "gain_ffn", {}, 200_704),
    ("mistral-7b", "gain", {}, 131_072),
    ("mistral-7b", "gain_ffn", {}, 262_144),
    ("llama2-13b", "gain", {}, 204_800),
    ("llama2-13b", "gain_ffn", {}, 409_600),
    ("llama2-70b", "gain", {}, 655_360),
    ("llama2-70b", "gain_ffn", {}, 1_310_720),
]


def meta_model(name):
    dims = dict(PAPER_MODELS[name])
    config = AutoConfig.for_model(dims.pop("model_type"), **dims)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


@pytest.fixture(scope="module")
def totals():
    return {name: count_parameters(meta_model(name).parameters()) for name in PAPER_MODELS}


def test_meta_models_have_the_published_sizes(totals):
    assert totals == TOTAL


@pytest.mark.parametrize("model_name, method_name, options, expected", EXPECTED,
                         ids=[f"{m}-{n}-{'-'.join(o) or 'output'}" for m, n, o, _ in EXPECTED])
@pytest.mark.parametrize("parametrization", ["plain", "exp"])
def test_gain_trainable_counts(model_name, method_name, options, expected, parametrization):
    model = meta_model(model_name)
    method = make_method(method_name, parametrization=parametrization, **options)
    params = method.trainable_parameters(method.attach(model))
    assert count_parameters(params.values()) == expected
    assert count_parameters(p for p in model.parameters() if p.requires_grad) == expected
    assert all(p.dtype == torch.float32 and p.is_meta for p in params.values())
    # absorption runs on meta tensors too and restores the plain architecture and count
    method.absorb(model)
    assert not any(isinstance(m, GainScaled) for m in model.modules())
    assert count_parameters(model.parameters()) == TOTAL[model_name]


def test_absorb_gain_on_a_meta_model_reports_every_wrapped_layer():
    model = meta_model("gpt2-large")
    make_method("gain_ffn").attach(model)
    assert absorb_gain(model) == 2 * 36

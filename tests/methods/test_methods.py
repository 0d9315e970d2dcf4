"""The shared method interface, for every registered method: attach, train, absorb, replay."""

import pytest
import torch

from gainbench.methods import METHODS, count_parameters, make_method
from gainbench.errors import GainbenchError
from gainbench.methods.gain import GainScaled
from tests.conftest import train_a_little

ALL_METHODS = sorted(METHODS)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_absorb_keeps_what_was_learned_and_the_architecture(name, tiny_model, token_batch):
    """Merged/absorbed logits equal the adapted model's, with trained (non-identity) adapters."""
    names_before = [n for n, _ in tiny_model.named_parameters()]
    architecture = type(tiny_model)
    with torch.no_grad():
        base_logits = tiny_model(token_batch).logits
    torch.manual_seed(0)
    method = make_method(name)
    adapted = method.attach(tiny_model)
    losses = train_a_little(adapted, method, token_batch)
    assert losses[-1] < losses[0], losses
    with torch.no_grad():
        adapted_logits = adapted(token_batch).logits
    model = method.absorb(adapted)
    with torch.no_grad():
        absorbed_logits = model(token_batch).logits
    assert (adapted_logits - base_logits).abs().max() > 1e-4  # training moved something
    torch.testing.assert_close(absorbed_logits, adapted_logits, rtol=1e-4, atol=1e-4)
    assert [n for n, _ in model.named_parameters()] == names_before
    assert not any(isinstance(m, GainScaled) for m in model.modules())
    assert type(model) is architecture  # plain HF again: no PEFT or GAIN wrapper left


@pytest.mark.parametrize("name", ALL_METHODS)
def test_replay_reproduces_a_stage_exactly(name, tiny_model, token_batch, tiny_tokenizer):
    reference = type(tiny_model)(tiny_model.config).eval()
    reference.load_state_dict(tiny_model.state_dict())
    torch.manual_seed(0)
    method = make_method(name)
    adapted = method.attach(tiny_model)
    train_a_little(adapted, method, token_batch)
    state = method.stage_state(adapted)
    trained = method.absorb(adapted)
    replayed = make_method(name).replay(reference, state)
    for (key, a), b in zip(trained.state_dict().items(), replayed.state_dict().values()):
        assert torch.equal(a, b), key


def test_trainable_parameter_counts(tiny_model):
    config = tiny_model.config
    d_model = getattr(config, "hidden_size", None) or config.n_embd
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    total = count_parameters(tiny_model.parameters())
    counts = {}
    for name in ("gain", "gain_ffn", "ia3", "full_ft"):
        model = type(tiny_model)(config)
        method = make_method(name)
        counts[name] = count_parameters(method.trainable_parameters(method.attach(model)).values())
    assert counts == {"gain": layers * d_model, "gain_ffn": 2 * layers * d_model,
                      "ia3": layers * d_model, "full_ft": total}


def test_lora_count_is_rank_times_in_plus_out_per_target():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=4))
    method = make_method("lora", r=4, targets=["attn_out", "ffn_down"])
    params = method.trainable_parameters(method.attach(model))
    # per layer: o_proj 4*(64+64), down_proj 4*(128+64)
    assert count_parameters(params.values()) == 2 * (4 * (64 + 64) + 4 * (128 + 64))


def test_unknown_method_and_bad_option_are_clear_errors():
    with pytest.raises(GainbenchError, match="unknown method 'adalora'; known methods: "):
        make_method("adalora")
    with pytest.raises(GainbenchError, match="method 'lora': bad option"):
        make_method("lora", rank=8)


def test_unknown_architecture_lists_one_block_and_the_keys_to_set():
    from gainbench.models.architectures import resolve_targets
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2))
    model.config.model_type = "mystery"
    with pytest.raises(GainbenchError, match=r"method.targets.*self_attn.o_proj"):
        resolve_targets(model, ["attn_out"])
    assert len(resolve_targets(model, ["self_attn.o_proj"])) == 1  # explicit suffixes still work

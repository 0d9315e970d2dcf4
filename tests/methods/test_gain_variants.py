"""GAIN variants as options: exp parametrization, decay toward 1, per-target sides, validation."""

import math

import pytest
import torch

from gainbench.errors import GainbenchError
from gainbench.methods import absorb_gain, apply_gain, count_parameters, make_method
from gainbench.methods.gain import GainScaled
from gainbench.settings import settings_from_config
from tests.conftest import compose_config


def _randomise(params, seed=0):
    g = torch.Generator().manual_seed(seed)
    for p in params.values():
        p.data = torch.rand(p.shape, generator=g) - 0.5  # log-scale in [-0.5, 0.5)


# --- parametrization: exp ---------------------------------------------------------------------------

def test_exp_starts_at_the_identity(tiny_model, token_batch):
    with torch.no_grad():
        base = tiny_model(token_batch).logits
    params = apply_gain(tiny_model, ["attn_out", "ffn_down"], parametrization="exp")
    assert all(torch.equal(p, torch.zeros_like(p)) for p in params.values())
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(token_batch).logits, base, rtol=0, atol=0)


def test_exp_log_scale_is_fp32_in_a_bf16_model(tiny_model, token_batch):
    tiny_model.to(torch.bfloat16)
    params = apply_gain(tiny_model, ["attn_out"], parametrization="exp")
    tiny_model(token_batch).logits.float().sum().backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in params.values())


@pytest.mark.parametrize("side", ["output", "input"])
def test_exp_absorbs_exp_of_the_log_scale(tiny_model, token_batch, side):
    """exp(u) absorbed equals the plain parametrization absorbing s = exp(u), and the wrapped model."""
    plain = type(tiny_model)(tiny_model.config).eval()
    plain.load_state_dict(tiny_model.state_dict())
    log_scales = apply_gain(tiny_model, ["attn_out", "ffn_down"], side, parametrization="exp")
    _randomise(log_scales)
    with torch.no_grad():
        wrapped = tiny_model(token_batch).logits
    absorb_gain(tiny_model)
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(token_batch).logits, wrapped, rtol=1e-5, atol=1e-5)
    scales = apply_gain(plain, ["attn_out", "ffn_down"], side)
    for name, s in scales.items():
        s.data = log_scales[name].detach().exp()
    absorb_gain(plain)
    for (key, a), b in zip(tiny_model.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=key)


def test_exp_method_saves_log_scales_and_replays_exactly(tiny_model, token_batch):
    reference = type(tiny_model)(tiny_model.config).eval()
    reference.load_state_dict(tiny_model.state_dict())
    method = make_method("gain_ffn", parametrization="exp")
    adapted = method.attach(tiny_model)
    params = method.trainable_parameters(adapted)
    assert params and all(name.endswith(".log_scale") for name in params)
    _randomise(params)
    state = method.stage_state(adapted)
    trained = method.absorb(adapted)
    replayed = make_method("gain_ffn", parametrization="exp").replay(reference, state)
    for (key, a), b in zip(trained.state_dict().items(), replayed.state_dict().values()):
        assert torch.equal(a, b), key
    # a stage saved as log-scales does not silently replay as plain scales
    with pytest.raises(GainbenchError, match="does not fit"):
        make_method("gain_ffn").replay(type(reference)(reference.config), state)


# --- decay_to_one -----------------------------------------------------------------------------------

def test_no_penalty_by_default(tiny_model):
    method = make_method("gain")
    assert method.regularization(method.attach(tiny_model)) is None


@pytest.mark.parametrize("parametrization", ["plain", "exp"])
def test_decay_to_one_is_the_sum_of_squared_distances_to_one(tiny_model, parametrization):
    method = make_method("gain_ffn", parametrization=parametrization, decay_to_one=0.5)
    model = method.attach(tiny_model)
    params = method.trainable_parameters(model)
    with torch.no_grad():
        for p in params.values():
            p.fill_(0.0 if parametrization == "plain" else math.log(3.0))  # s = 0 or s = 3
    n = count_parameters(params.values())
    expected = 0.5 * n * (1.0 if parametrization == "plain" else 4.0)
    penalty = method.regularization(model)
    assert penalty.dtype == torch.float32 and penalty.dim() == 0
    torch.testing.assert_close(penalty, torch.tensor(expected))
    penalty.backward()  # it pulls every s toward 1
    for p in params.values():
        assert (p.grad < 0).all() if parametrization == "plain" else (p.grad > 0).all()


def test_decay_to_one_is_zero_at_the_identity_and_gone_after_absorption(tiny_model):
    method = make_method("gain", decay_to_one=1.0)
    model = method.attach(tiny_model)
    assert method.regularization(model).item() == 0.0
    assert method.regularization(method.absorb(model)) is None


# --- sides ------------------------------------------------------------------------------------------

def test_per_target_side_puts_the_ffn_scale_on_the_intermediate(tiny_model):
    config = tiny_model.config
    d_model = getattr(config, "hidden_size", None) or config.n_embd
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    inner = getattr(config, "intermediate_size", None) or config.n_inner or 4 * d_model
    method = make_method("gain_ffn", side={"ffn_down": "input"}, parametrization="exp")
    model = method.attach(tiny_model)
    assert count_parameters(method.trainable_parameters(model).values()) == layers * (d_model + inner)
    assert {m.side for m in model.modules() if isinstance(m, GainScaled)} == {"output", "input"}


# --- validation -------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, pattern", [
    ({"parametrization": "expo"}, r"parametrization='expo' is not valid; use one of plain, exp"),
    ({"side": "outptu"}, r"side='outptu' is not valid; use one of output, input"),
    ({"side": {"ffn_dwn": "input"}}, r"side=.*ffn_dwn.* a dict keyed by the targets"),
    ({"side": {"ffn_down": "inptu"}}, r"side=.*inptu.* use one of output, input"),
    ({"decay_to_one": -1.0}, r"decay_to_one=-1.0 is not valid; use one of a number >= 0"),
    ({"decay_to_one": "0.1"}, r"decay_to_one='0.1' is not valid"),
    ({"targets": []}, r"targets=\[\] is not valid"),
])
def test_bad_options_fail_at_construction_naming_the_valid_values(options, pattern):
    with pytest.raises(GainbenchError, match=pattern):
        make_method("gain_ffn", **options)


def test_unknown_option_is_a_clear_error():
    with pytest.raises(GainbenchError, match="method 'gain': bad option"):
        make_method("gain", parametrisation="exp")


# --- from YAML / the command line -------------------------------------------------------------------

@pytest.mark.parametrize("method_name", ["gain", "gain_ffn"])
def test_yaml_defaults_build_the_plain_method(method_name):
    settings = settings_from_config(compose_config([f"method={method_name}"]))
    method = make_method(settings.method_name, **settings.method_options)
    assert (method.parametrization, method.decay_to_one, method.side) == ("plain", 0.0, "output")


def test_variants_are_command_line_overrides():
    settings = settings_from_config(compose_config([
        "method=gain_ffn", "method.options.parametrization=exp", "method.options.decay_to_one=1e-3",
        "method.options.side={ffn_down: input}"]))
    method = make_method(settings.method_name, **settings.method_options)
    assert (method.parametrization, method.decay_to_one, method.side) == ("exp", 1e-3, {"ffn_down": "input"})


def test_one_scale_kept_across_stages(tiny_model, token_batch):
    """absorb_each_stage=False: the same scales train on, the model stays wrapped, and the
    effective weights equal what absorption would write."""
    from gainbench.methods import make_method
    from gainbench.methods.gain import GainScaled, effective_weight

    method = make_method("gain_ffn", absorb_each_stage=False)
    assert method.state_is_full_model
    model = method.attach(tiny_model)
    first = dict(method.trainable_parameters(model))
    with torch.no_grad():
        for p in first.values():
            p.mul_(1.1)
    model = method.absorb(model)  # a no-op: still wrapped
    again = method.attach(model)
    assert dict(method.trainable_parameters(again)).keys() == first.keys()
    assert all(a is b for a, b in zip(method.trainable_parameters(again).values(), first.values()))
    wrapped = {n: m for n, m in again.named_modules() if isinstance(m, GainScaled)}
    folded = {n: effective_weight(m).clone() for n, m in wrapped.items()}
    with torch.no_grad():
        logits = again(token_batch).logits
    make_method("gain_ffn").absorb(again)  # absorbing for real gives the same weights and outputs
    for name, weight in folded.items():
        torch.testing.assert_close(again.get_submodule(name).weight, weight)
    with torch.no_grad():
        torch.testing.assert_close(again(token_batch).logits, logits, rtol=1e-5, atol=1e-5)

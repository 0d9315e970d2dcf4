"""Every model x method x sequence composes into settings the protocol accepts."""

import pytest

from gainbench.cli import CONFIG_DIR, check_group_choices
from gainbench.errors import GainbenchError
from gainbench.methods import METHODS
from gainbench.settings import run_id_for, settings_from_config, to_container
from tests.conftest import compose_config


def _options(group):
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("model", _options("model"))
@pytest.mark.parametrize("method", _options("method"))
@pytest.mark.parametrize("sequence", _options("sequence"))
def test_every_combination_composes(model, method, sequence):
    required = ["model.name_or_path=/some/folder"] if model == "hf" else []
    settings = settings_from_config(compose_config([f"model={model}", f"method={method}",
                                                    f"sequence={sequence}", *required]))
    assert settings.model.name == model
    assert settings.method_name == method in METHODS
    assert settings.sequence_name == sequence
    assert len(settings.domains) == 8
    assert settings.train.lr > 0


def test_the_names_users_type_exist():
    assert {"smollm2", "gpt2-large", "qwen2.5", "mistral", "llama2-13b", "llama2-70b",
            "tiny-llama", "tiny-gpt2"} <= set(_options("model"))
    assert {"gain", "gain_ffn", "lora", "full_ft"} <= set(_options("method"))
    assert {"embedded8", "paper8"} <= set(_options("sequence"))


def test_defaults_are_the_embedded_run():
    settings = settings_from_config(compose_config())
    assert (settings.model.name, settings.method_name, settings.sequence_name) == (
        "smollm2", "gain_ffn", "embedded8")


def test_overrides_compose():
    settings = settings_from_config(compose_config(
        ["model=qwen2.5", "method=gain_ffn", "train.lr=1e-3", "seed=2"]))
    assert settings.model.name_or_path == "Qwen/Qwen2.5-7B"
    assert settings.train.lr == 1e-3 and settings.seed == 2


def test_method_default_lr_follows_the_method_until_overridden():
    assert settings_from_config(compose_config(["method=lora"])).train.lr == 2e-4
    assert settings_from_config(compose_config(["method=lora", "train.lr=1e-3"])).train.lr == 1e-3


def test_smoke_preset_uses_the_tiny_model():
    settings = settings_from_config(compose_config(["experiment=smoke"]))
    assert settings.model.name == "tiny-llama" and settings.model.source == "tiny"


def test_run_id_tracks_what_changes_results_only():
    base = to_container(compose_config())
    same = to_container(compose_config(["results_dir=/elsewhere", "logger=wandb"]))
    other_seed = to_container(compose_config(["seed=1"]))
    other_lr = to_container(compose_config(["train.lr=1e-2"]))
    assert run_id_for(base) == run_id_for(same)
    assert len({run_id_for(base), run_id_for(other_seed), run_id_for(other_lr)}) == 3
    assert run_id_for(base).startswith("smollm2-gain_ffn-embedded8-seed0-")


def test_generic_model_needs_its_path():
    with pytest.raises(GainbenchError, match=r"model.name_or_path must be set"):
        settings_from_config(compose_config(["model=hf"]))
    spec = settings_from_config(compose_config(["model=hf", "model.name_or_path=/m"])).model
    assert spec.name_or_path == "/m" and spec.source == "hub"


def test_sequence_order_selects_a_subset():
    settings = settings_from_config(compose_config(["sequence.order=[kjv_bible,wiki_history]"]))
    assert [d.name for d in settings.domains] == ["kjv_bible", "wiki_history"]


def test_unknown_domain_in_order_is_a_clear_error():
    with pytest.raises(GainbenchError, match="no domain.*nope"):
        settings_from_config(compose_config(["sequence.order=[nope]"]))


@pytest.mark.parametrize("arg", ["model=gpt5", "method=adalora", "sequence=nine", "experiment=huge",
                                 "model=smollm2,gpt5"])
def test_unknown_group_choice_names_the_options(arg):
    with pytest.raises(GainbenchError, match=r"unknown \w+ '(gpt5|adalora|nine|huge)'; choose one of"):
        check_group_choices([arg])


def test_known_group_choices_and_plain_overrides_pass():
    check_group_choices(["model=tiny-gpt2", "method=gain,lora", "train.lr=1e-3", "seed=3"])


@pytest.mark.parametrize("override, message", [
    ("+model.colour=red", "model config 'smollm2'.*colour"),
    ("+sequence.domains.kjv_bible.colour=red", "a domain entry has a bad key.*colour"),
])
def test_unknown_config_keys_are_clear_errors(override, message):
    with pytest.raises(GainbenchError, match=message):
        settings_from_config(compose_config([override]))


@pytest.mark.parametrize("secret", ["+logger.api_key=abc", "+hf_token=hf_x", "+model.token=x",
                                    "+logger.wandb_key=x"])
def test_a_credential_in_the_config_is_refused_before_it_reaches_run_json(secret):
    with pytest.raises(GainbenchError, match="looks like a credential.*environment"):
        settings_from_config(compose_config([secret]))


def test_execution_settings_leave_the_run_id_alone_but_bf16_does_not():
    base = settings_from_config(compose_config([])).run_id
    for same in (["train.strategy=fsdp"], ["train.strategy=fsdp", "train.shard_weights=true"],
                 ["train.grad_accum_steps=4"],
                 ["train.activation_checkpointing=true"], ["train.checkpoint_every=50"]):
        assert settings_from_config(compose_config(same)).run_id == base
    assert settings_from_config(compose_config(["train.precision=bf16"])).run_id != base


def test_sharded_weights_need_fsdp():
    with pytest.raises(GainbenchError, match="use it with train.strategy=fsdp"):
        settings_from_config(compose_config(["train.strategy=ddp", "train.shard_weights=true"]))


@pytest.mark.parametrize("model", ["gpt2-large", "qwen2.5", "mistral", "llama2-13b", "llama2-70b"])
def test_the_paper_grid_composes_for_every_model_of_the_readme_command(model):
    settings = settings_from_config(compose_config(["experiment=paper_grid", f"model={model}",
                                                    "train.strategy=fsdp", "train.checkpoint_every=0"]))
    assert settings.sequence_name == "paper8" and len(settings.domains) == 8
    assert settings.seq_len == 1024 and settings.train.batch_size == 64
    assert "boolq" in settings.lm_eval.tasks

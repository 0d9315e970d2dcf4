"""Every config file composes into settings the protocol accepts, and overrides do what they say.

Each YAML file is composed once with the defaults (not the product of the groups): a file that
composes with the defaults composes with any other choice of the other groups, since the schema
checks each group on its own and the few cross-group checks (budgets, stages) are tested in
tests/test_schema.py.
"""

import pytest

from gainbench.cli import CONFIG_DIR, check_group_choices, check_override_keys
from gainbench.errors import GainbenchError
from gainbench.methods import METHODS
from gainbench.settings import run_id_for, settings_from_config, to_container
from tests.conftest import compose_config

GROUPS = ("model", "method", "sequence", "experiment", "eval", "logger", "analysis", "train")
# what a choice needs besides itself
REQUIRED = {("model", "hf"): ["model.name_or_path=/some/folder"]}


def _options(group):
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group, choice", [(g, c) for g in GROUPS for c in _options(g)],
                         ids=lambda v: str(v))
def test_every_config_file_composes_with_the_defaults(group, choice):
    settings = settings_from_config(compose_config([f"{group}={choice}",
                                                    *REQUIRED.get((group, choice), [])]))
    assert settings.method_name in METHODS
    assert settings.domains and settings.train.lr > 0
    chosen = {"model": settings.model.name, "method": settings.method_name,
              "sequence": settings.sequence_name}
    if group in chosen:
        assert chosen[group] == choice
    if group == "analysis":
        assert settings.analysis.name == choice and settings.analysis.any == (choice != "none")


def test_every_config_file_is_covered():
    on_disk = {p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*.yaml")}
    covered = {f"{g}/{c}.yaml" for g in GROUPS for c in _options(g)} | {"config.yaml"}
    assert on_disk - covered == {"hydra/launcher/slurm.yaml"}  # composed by tests/test_sweep.py


def test_the_names_users_type_exist():
    assert {"smollm2", "gpt2-large", "qwen2.5", "mistral", "llama2-13b", "llama2-70b",
            "tiny-llama", "tiny-gpt2"} <= set(_options("model"))
    assert {"gain", "gain_ffn", "lora", "full_ft"} <= set(_options("method"))
    assert {"embedded8", "paper8"} <= set(_options("sequence"))


def test_defaults_are_the_embedded_run():
    settings = settings_from_config(compose_config())
    assert (settings.model.name, settings.method_name, settings.sequence_name) == (
        "smollm2", "gain_ffn", "embedded8")
    assert len(settings.domains) == 8


def test_overrides_compose():
    settings = settings_from_config(compose_config(
        ["model=qwen2.5", "method=gain_ffn", "train.lr=1e-3", "seed=2"]))
    assert settings.model.name_or_path == "Qwen/Qwen2.5-7B"
    assert settings.train.lr == 1e-3 and settings.seed == 2


def test_every_setting_is_a_plain_override():
    settings = settings_from_config(compose_config([
        "train.betas=[0.9,0.95]", "eval.stride=128", "eval.lm_eval.include_path=/my/tasks",
        "method.options.absorb_each_stage=false", "model.trust_remote_code=true",
        "sequence.domains.kjv_bible.train_tokens=16384", "logger.project=mine",
        "analysis.interpolation.stages=[1]"]))
    assert settings.train.betas == (0.9, 0.95) and settings.eval_stride == 128
    assert settings.lm_eval.include_path == "/my/tasks"
    assert settings.method_options["absorb_each_stage"] is False
    assert settings.model.trust_remote_code is True
    assert {d.name: d.train_tokens for d in settings.domains}["kjv_bible"] == 16384
    assert settings.logger["project"] == "mine" and settings.analysis.any


def test_the_data_settings_are_plain_overrides_that_reach_the_data_rules():
    rules = settings_from_config(compose_config([])).data_rules
    assert (rules.val_doc_tokens, rules.val_min_documents, rules.pool_factor, rules.dedup_words,
            rules.dedup_max_containment) == (64, 16, 4, 12, 0.15)
    rules = settings_from_config(compose_config([
        "eval.val_doc_tokens=null", "eval.val_min_documents=2", "train.pool_factor=1",
        "eval.val_dedup.shingle_words=8", "eval.val_dedup.max_containment=null"])).data_rules
    assert (rules.val_doc_tokens, rules.val_min_documents, rules.pool_factor, rules.dedup_words,
            rules.dedup_max_containment) == (None, 2, 1, 8, None)
    grid = settings_from_config(compose_config(["experiment=paper_grid", "model=qwen2.5"]))
    assert grid.data_rules.val_doc_tokens == 16384   # 1M validation tokens from >= 64 documents


def test_method_default_lr_follows_the_method_until_overridden():
    assert settings_from_config(compose_config(["method=lora"])).train.lr == 2e-4
    assert settings_from_config(compose_config(["method=lora", "train.lr=1e-3"])).train.lr == 1e-3


def test_smoke_preset_uses_the_tiny_model():
    settings = settings_from_config(compose_config(["experiment=smoke"]))
    assert settings.model.name == "tiny-llama" and settings.model.source == "tiny"


def test_run_id_tracks_what_changes_results_only():
    base = to_container(compose_config())
    same = to_container(compose_config(["results_dir=/elsewhere", "logger=wandb", "device=cpu"]))
    other_seed = to_container(compose_config(["seed=1"]))
    other_lr = to_container(compose_config(["train.lr=1e-2"]))
    assert run_id_for(base) == run_id_for(same)
    assert len({run_id_for(base), run_id_for(other_seed), run_id_for(other_lr)}) == 3
    assert run_id_for(base).startswith("smollm2-gain_ffn-embedded8-seed0-")


def test_execution_settings_leave_the_run_id_alone_but_bf16_does_not():
    base = settings_from_config(compose_config([])).run_id
    for same in (["train.strategy=fsdp"], ["train.strategy=fsdp", "train.shard_weights=true"],
                 ["train.grad_accum_steps=4"],
                 ["train.activation_checkpointing=true"], ["train.checkpoint_every=50"]):
        assert settings_from_config(compose_config(same)).run_id == base
    for other in (["train.precision=bf16"], ["train.betas=[0.9,0.95]"], ["eval.stride=64"],
                  ["method.options.absorb_each_stage=false"]):
        assert settings_from_config(compose_config(other)).run_id != base, other


def test_generic_model_needs_its_path():
    with pytest.raises(GainbenchError, match=r"model 'hf': set model.name_or_path to an HF id"):
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
    check_override_keys(["model=tiny-gpt2", "method=gain,lora", "train.lr=1e-3", "seed=3",
                         "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "-m", "--cfg",
                         "method.options.r=16", "model.architecture.n_layer=4", "lr_scale=1,4",
                         "+sequence.domains.mine.source={kind: local_files}",
                         "~sequence.domains.kjv_bible.source", "sequence.domains.kjv_bible.licence=x"])


@pytest.mark.parametrize("override, message", [
    ("+model.colour=red", r"unknown config key 'model.colour'; remove it \(model accepts: name, "),
    ("+sequence.domains.kjv_bible.colour=red",
     r"unknown config key 'sequence.domains.kjv_bible.colour'; remove it \(.*accepts: .*licence"),
    ("+train.lrr=1e-3", r"unknown config key 'train.lrr'; did you mean train.lr\? \(train accepts"),
    ("+eval.lm_eval.task=[boolq]", r"'eval.lm_eval.task'; did you mean eval.lm_eval.tasks\?"),
    ("+sed=1", r"unknown config key 'sed'; did you mean seed\? \(the top level accepts"),
])
def test_unknown_config_keys_are_clear_errors_even_with_a_plus(override, message):
    with pytest.raises(GainbenchError, match=message):
        settings_from_config(compose_config([override]))
    with pytest.raises(GainbenchError, match=message):   # and before Hydra composes
        check_override_keys([override])


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

"""The typed schema (gainbench/config/): the YAML mirrors its defaults, every committed run keeps
its id, and bad input is refused in one line before anything is loaded or written."""

import ast
import dataclasses
import inspect
import json
import subprocess
import sys
import typing

import pytest
import yaml
from omegaconf import OmegaConf

from gainbench.cli import CONFIG_DIR, check_override_keys
from gainbench.config import schema
from gainbench.config.fields import config_fields, dump
from gainbench.config.schema import (AnalysisSettings, DomainSpec, EvalSettings, GainbenchConfig,
                                     LoggerSettings, ModelSpec, TrainSettings, read_config, run_id)
from gainbench.errors import GainbenchError
from gainbench.methods import METHODS
from gainbench.settings import run_id_for, settings_from_config, to_container
from tests.conftest import compose_config, subprocess_env

REPO = CONFIG_DIR.parent
COMMITTED_RUNS = sorted(p.parent for p in REPO.glob("results/*/*/run.json"))


def _yaml(relative: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / relative), resolve=False)


def _defaults(cls) -> dict:
    """The declared default of every field of ``cls`` that has one, as the YAML writes it."""
    out = {}
    for f in config_fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = dump(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = dump(f.default_factory())
    return out


def _strip_comments(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in ("defaults", "hydra")}


# --- the YAML mirrors the schema --------------------------------------------------------------

@pytest.mark.parametrize("relative, cls, skip", [
    ("train/default.yaml", TrainSettings, {"lr"}),          # lr: ${method.lr}
    ("eval/default.yaml", EvalSettings, set()),
    ("logger/none.yaml", LoggerSettings, set()),
    ("analysis/none.yaml", AnalysisSettings, set()),
])
def test_the_default_group_files_hold_exactly_the_schema_defaults(relative, cls, skip):
    data = _yaml(relative)
    assert set(data) == {f.name for f in config_fields(cls)}
    assert {k: v for k, v in data.items() if k not in skip} == _defaults(cls)


def test_config_yaml_holds_the_top_level_and_model_defaults():
    data = _strip_comments(_yaml("config.yaml"))
    top = {k: v for k, v in _defaults(GainbenchConfig).items() if not isinstance(v, dict)}
    assert {k: data[k] for k in top} == top
    assert data["model"] == {k: v for k, v in _defaults(ModelSpec).items()}


@pytest.mark.parametrize("sequence", ["embedded8", "paper8"])
def test_every_domain_entry_starts_from_the_domain_defaults(sequence):
    node = yaml.compose((CONFIG_DIR / "sequence" / f"{sequence}.yaml").read_text())
    domains = next(value for key, value in node.value if key.value == "domains")
    first_entry = domains.value[0][1]
    merged = next(value for key, value in first_entry.value if key.value == "<<")
    assert yaml.safe_load(yaml.serialize(merged)) == _defaults(DomainSpec)
    entries = yaml.safe_load((CONFIG_DIR / "sequence" / f"{sequence}.yaml").read_text())["domains"]
    assert all(set(e) == {f.name for f in config_fields(DomainSpec)} for e in entries.values())


def _init_defaults(cls) -> dict:
    """A method class's options and their defaults, through ``**options`` to its parents."""
    options = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        parameters = list(inspect.signature(klass.__init__).parameters.values())[1:]
        for p in parameters:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                options.setdefault(p.name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


@pytest.mark.parametrize("method", sorted(p.stem for p in (CONFIG_DIR / "method").glob("*.yaml")))
def test_a_method_file_lists_each_option_of_its_class_at_the_class_default(method):
    data = _yaml(f"method/{method}.yaml")
    assert set(data) == {f.name for f in config_fields(schema.MethodConfig)}
    assert data["options"] == _init_defaults(METHODS[data["name"]])


def _nested_class(cls, name):
    """The settings class below field ``name`` of ``cls`` (a table's entry class), or None."""
    hint = typing.get_type_hints(cls)[name]
    if dataclasses.is_dataclass(hint):
        return hint
    args = typing.get_args(hint)
    return args[-1] if typing.get_origin(hint) is dict and args and dataclasses.is_dataclass(args[-1]) else None


def _absent(cls, data, path=""):
    """Schema paths a composed config does not spell out (each would need a `+` to be set)."""
    missing = []
    for f in config_fields(cls):
        where = f"{path}.{f.name}" if path else f.name
        nested = _nested_class(cls, f.name)
        if f.name not in data:
            missing.append(where)
        elif nested is DomainSpec:   # a table: every entry spells out every key
            for name, entry in data[f.name].items():
                missing += _absent(DomainSpec, entry, f"{where}.{name}")
        elif nested is not None:
            missing += _absent(nested, data[f.name], where)
    return missing


@pytest.mark.parametrize("overrides", [[], ["model=tiny-llama"], ["model=gpt2-large"],
                                       ["sequence=paper8"], ["eval=paper_suite"],
                                       ["eval=offline_suite"], ["logger=wandb"],
                                       ["analysis=figures"], ["experiment=paper_grid"]])
def test_every_setting_is_spelled_out_so_no_override_needs_a_plus(overrides):
    assert _absent(GainbenchConfig, to_container(compose_config(overrides))) == []


def test_the_schema_names_the_training_loop_s_precisions_and_runnable_schedules():
    import torch
    from transformers import get_scheduler

    from gainbench.training import loop

    assert set(schema.PRECISIONS) == set(loop.PRECISIONS)
    assert loop.TrainSettings is TrainSettings
    for name in schema.SCHEDULES:
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))], lr=1e-3)
        scheduler = get_scheduler(name, optimizer, num_warmup_steps=1, num_training_steps=4)
        for _ in range(4):
            optimizer.step()
            scheduler.step()


def test_the_schema_modules_import_neither_hydra_nor_omegaconf():
    for path in (REPO / "gainbench" / "config").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("hydra", "omegaconf") for n in names), path


# --- run ids ----------------------------------------------------------------------------------

# Issue 15's data settings (validation from many capped documents, a training pool per domain,
# the near-duplicate screen, python_docs' larger validation split) changed what every default run
# measures, so default ids moved once, by the new fields' non-neutral defaults (no schema version
# bump: at their neutral values the new fields pack exactly as before). These overrides restore
# what runs measured before them.
BEFORE_DATA_SETTINGS = ["eval.val_doc_tokens=null", "train.pool_factor=1",
                        "eval.val_dedup.max_containment=null",
                        "sequence.domains.python_docs.validation_percent=10.0"]


def test_the_smoke_run_id_is_pinned_and_the_old_one_is_the_data_settings_before():
    assert (settings_from_config(compose_config(["experiment=smoke"])).run_id
            == "tiny-llama-gain_ffn-embedded8-seed0-ff03a324")
    assert (settings_from_config(compose_config(["experiment=smoke", *BEFORE_DATA_SETTINGS])).run_id
            == "tiny-llama-gain_ffn-embedded8-seed0-aa6a7051")   # the id it had before


def test_there_are_committed_runs_to_check():
    assert {p.parent.name for p in COMMITTED_RUNS} >= {"miniature", "sweep", "analyses"}


@pytest.mark.parametrize("run_dir", COMMITTED_RUNS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_committed_run_s_stored_config_gives_its_own_id(run_dir):
    meta = json.loads((run_dir / "run.json").read_text())
    assert run_id_for(meta["config"]) == meta["run_id"] == run_dir.name


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value and not prefix.endswith("options."):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _hydra_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"


def _command_of(config: dict) -> list[str]:
    """The overrides that make today's configs/ compose ``config``: its group choices, then any
    value that differs from the composed one."""
    groups = [f"model={config['model']['name']}", f"method={config['method']['name']}",
              f"sequence={config['sequence']['name']}"]
    evals = {p.stem: _yaml(f"eval/{p.name}")["lm_eval"]["tasks"] for p in (CONFIG_DIR / "eval").glob("*.yaml")}
    groups.append("eval=" + next(name for name, tasks in evals.items()
                                 if tasks == config["eval"]["lm_eval"]["tasks"]))
    if "analysis" in config:
        groups.append(f"analysis={config['analysis']['name']}")
    if config.get("lr_scale") is not None:   # a point of `-m experiment=lr_sweep_cpu`
        groups += ["experiment=lr_sweep_cpu", f"lr_scale={config['lr_scale']}"]
    composed = _flatten(to_container(compose_config(groups)))
    stored = _flatten(config)
    assert set(stored) <= set(composed), set(stored) - set(composed)  # no key has gone
    return groups + [f"{k}={_hydra_value(v)}" for k, v in stored.items() if composed[k] != v]


def _neutral_leaves(cls, config: dict, prefix: str = ""):
    """``(path, value)`` of every neutral value the schema declares below ``cls``, one per leaf
    (a nested settings group's neutral value is spelled out key by key; a table's, for each
    entry ``config`` has)."""
    for f in config_fields(cls):
        path, nested = f"{prefix}{f.name}", _nested_class(cls, f.name)
        if "neutral" in f.metadata:
            neutral = dump(f.metadata["neutral"])
            yield from (_flatten(neutral, f"{path}.").items() if isinstance(neutral, dict) and neutral
                        else [(path, neutral)])
        elif nested is DomainSpec:
            for name, entry in config.get(f.name, {}).items():
                yield from _neutral_leaves(DomainSpec, entry, f"{path}.{name}.")
        elif nested is not None:
            yield from _neutral_leaves(nested, config.get(f.name, {}), f"{path}.")


def _settings_before(config: dict, command: list[str]) -> list[str]:
    """Overrides giving each setting a recorded config lacks the neutral value the run had (a
    key added after the run: run_id_for reads the stored config the same way), where ``command``
    composes another value."""
    stored, composed = _flatten(config), _flatten(to_container(compose_config(command)))
    return [f"{path}={_hydra_value(value)}" for path, value in _neutral_leaves(GainbenchConfig, config)
            if path not in stored and composed.get(path) != value]


@pytest.mark.parametrize("run_dir", COMMITTED_RUNS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_committed_run_is_found_again_by_its_own_command(run_dir):
    """A run made with today's defaults is found by its plain command (with its budget, where
    it is not the experiment's). A run made before a
    setting with a non-neutral default existed (issue 15's data settings) measured something
    today's defaults no longer compose, so no plain command can find it: it is found by its
    command plus the settings it ran with, the neutral values of the keys its config lacks and
    python_docs' old validation split, and by nothing more."""
    meta = json.loads((run_dir / "run.json").read_text())
    command = _command_of(meta["config"])
    before = _settings_before(meta["config"], command)
    overrides = command + before
    # train.tokens_per_stage: the budget of a matched study at more than one (results/matched-16)
    allowed = {"model", "method", "sequence", "eval", "analysis", "experiment", "seed", "lr_scale",
               "results_dir", "train.tokens_per_stage"}
    if before:
        allowed |= {o.split("=")[0] for o in before}
    # the command is the groups, the seed, lr_scale and the results folder, and a method's own
    # option where a study ran it as another front (results/matched: EWC's lam): nothing else
    keys = {o.split("=")[0] for o in overrides}
    assert {k for k in keys if not k.startswith("method.options.")} <= allowed
    assert settings_from_config(compose_config(overrides)).run_id == run_dir.name


def test_run_json_s_config_reads_back_to_the_same_settings_and_id():
    for overrides in ([], ["experiment=smoke", "analysis=figures"], ["sequence=paper8", "model=hf",
                                                                     "model.name_or_path=/m"]):
        settings = settings_from_config(compose_config(overrides))
        again = read_config(json.loads(json.dumps(settings.resolved_config)))
        assert again == settings.config and run_id(again) == settings.run_id


def test_a_field_added_after_version_1_moves_the_id_only_away_from_its_neutral_value():
    base = settings_from_config(compose_config(["experiment=smoke"])).run_id
    for neutral in (["train.betas=[0.9,0.999]"], ["eval.stride=null"], ["train.precision=fp32"],
                    ["method.options.absorb_each_stage=true"], ["model.trust_remote_code=false"],
                    ["sequence.domains.kjv_bible.train_tokens=null"], ["lr_scale=null"]):
        assert settings_from_config(compose_config(["experiment=smoke", *neutral])).run_id == base
    # a new field at a non-neutral default is in the id; at its neutral value it leaves it
    before = settings_from_config(compose_config(["experiment=smoke", *BEFORE_DATA_SETTINGS])).run_id
    for field in BEFORE_DATA_SETTINGS[:3]:
        rest = [o for o in BEFORE_DATA_SETTINGS if o != field]
        assert settings_from_config(compose_config(["experiment=smoke", *rest])).run_id != before
    assert schema.SCHEMA_VERSION == 1


def test_a_recorded_config_without_a_new_key_reads_as_its_neutral_value():
    settings = settings_from_config(compose_config(["experiment=smoke"]))
    recorded = json.loads(json.dumps(settings.resolved_config))
    del recorded["eval"]["val_doc_tokens"], recorded["train"]["pool_factor"]
    del recorded["eval"]["val_min_documents"], recorded["eval"]["val_dedup"]
    old = read_config(recorded, stored=True)
    assert (old.eval.val_doc_tokens, old.train.pool_factor, old.eval.val_dedup.max_containment) == (
        None, 1, None)
    assert read_config(recorded).eval.val_doc_tokens == 64   # a composed config takes the default
    assert run_id_for(recorded) == run_id(old) != settings.run_id


# --- strict inputs: one line, before anything is loaded or written ----------------------------

@pytest.mark.parametrize("override, message", [
    ("train.lr=abc", r"^train.lr must be a finite number, got 'abc'; set train.lr to one"),
    ("seed=abc", r"^seed must be a whole number, got 'abc'; set seed to one"),
    ("train.tokens_per_stage=-5", r"train.tokens_per_stage=-5 is a stage budget under one optimiser "
                                  r"step \(train.batch_size x train.seq_len = 4 x 64 = 256 tokens\)"),
    ("train.tokens_per_stage=0", r"train.tokens_per_stage=0 is a stage budget under one optimiser step"),
    ("train.tokens_per_stage=10", r"tokens_per_stage=10 is a stage budget .*set train.tokens_per_stage >= 256"),
    ("sequence.domains.kjv_bible.train_tokens=100",
     r"sequence.domains.kjv_bible.train_tokens=100 is a stage budget under one optimiser step"),
    ("train.seq_len=0", r"^train.seq_len must be >= 2, got 0; set train.seq_len >= 2"),
    ("train.seq_len=1", r"^train.seq_len must be >= 2, got 1"),
    ("eval.val_tokens=0", r"^eval.val_tokens=0 is a validation budget under one block of "
                          r"train.seq_len=64 tokens, so nothing would be scored; set eval.val_tokens >= 64"),
    ("train.lr=1e38", r"^train.lr=1e\+38 is past what AdamW's fp32 step can hold .*lr <= 3.4e\+37\); "
                      r"lower train.lr"),
    ("train.lr=0", r"^train.lr must be a positive number, got 0"),
    ("train.lr=inf", r"^train.lr must be a finite number"),
    ("sequence.order=[wiki_history,kjv_bible,wiki_history]",
     r"^sequence.order lists wiki_history more than once"),
    ("train.schedule=cosin", r"^train.schedule must be cosine, .*; did you mean train.schedule=cosine\?"),
    ("train.strategy=zero", r"^train.strategy must be single, ddp or fsdp, got 'zero'"),
    ("train.shard_weights=yes", r"^train.shard_weights must be true or false, got 'yes'"),
    ("train.betas=[0.9]", r"^train.betas must be a list of 2 values"),
    ("train.betas=[0.9,1.0]", r"^train.betas must be two numbers in \[0, 1\)"),
    ("eval.lm_eval.tasks=boolq", r"^eval.lm_eval.tasks must be a list, got 'boolq'"),
    ("eval.lm_eval.stages=some", r"^eval.lm_eval.stages must be all, first_last, none or a list"),
    ("eval.lm_eval.stages=[0,9]", r"^eval.lm_eval.stages lists stage\(s\) \[9\], but this sequence "
                                  r"has stages 0..8"),
    ("eval.stride=65", r"^eval.stride=65 is longer than the window \(train.seq_len=64\)"),
    ("eval.diagnostics.stages=first", r"^eval.diagnostics.stages must be last, all or none"),
    ("model.dtype=fp8", r"^model 'tiny-llama': unknown dtype 'fp8'"),
    ("logger.mode=cloud", r"^logger.mode must be offline, online or disabled"),
    ("sequence.domains.kjv_bible.validation_percent=120",
     r"^sequence.domains.kjv_bible.validation_percent must be <= 100"),
    ("analysis.combination.stages=[2,4]", r"^analysis.combination.stages must be two consecutive"),
    ("eval.val_doc_tokens=0", r"^eval.val_doc_tokens must be >= 1, got 0; set eval.val_doc_tokens >= 1"),
    ("eval.val_min_documents=0", r"^eval.val_min_documents must be >= 1, got 0"),
    ("train.pool_factor=0", r"^train.pool_factor must be >= 1, got 0"),
    ("train.pool_factor=1.5", r"^train.pool_factor must be a whole number, got 1.5"),
    ("eval.val_dedup.max_containment=0", r"^eval.val_dedup.max_containment must be a positive number"),
    ("eval.val_dedup.max_containment=1.5", r"^eval.val_dedup.max_containment must be <= 1"),
    ("eval.val_dedup.shingle_words=0", r"^eval.val_dedup.shingle_words must be >= 1"),
])
def test_bad_values_are_one_line_errors_naming_the_fix(override, message):
    with pytest.raises(GainbenchError, match=message) as refused:
        settings_from_config(compose_config(["experiment=smoke", override]))
    assert "\n" not in str(refused.value) and "; " in str(refused.value)


def test_the_lr_bound_is_what_fp32_adamw_holds_so_a_diverging_rate_still_runs_into_nonfinite():
    assert TrainSettings(lr=1e30).lr == 1e30           # diverges: train.nonfinite reports it
    assert TrainSettings(lr=3.4e37).lr == 3.4e37
    with pytest.raises(GainbenchError, match="past what AdamW's fp32 step can hold"):
        TrainSettings(lr=3.5e37)
    with pytest.raises(GainbenchError, match="past what AdamW's fp32 step can hold"):
        TrainSettings(lr=1e36, weight_decay=1e3)


@pytest.mark.parametrize("key", [
    "logger.secret_key", "train.github_token", "wandb_api_token", "logger.api_key", "hf_token",
    "model.token", "logger.apikey", "logger.ApiKey", "model.password", "passwd", "logger.credentials",
    "method.options.private_key", "method.options.privateKey", "logger.wandb_key", "model.HF_TOKEN",
    "sequence.domains.kjv_bible.source.auth_token", "model.architecture.access_token",
    "logger.client_secret",
])
def test_a_credential_like_key_anywhere_is_refused_by_pattern(key):
    message = f"config key '{key}' looks like a credential.*environment"
    with pytest.raises(GainbenchError, match=message):
        settings_from_config(compose_config([f"+{key}=x"]))
    with pytest.raises(GainbenchError, match=message):
        check_override_keys([f"+{key}=x"])


@pytest.mark.parametrize("override", ["+model.architecture.pad_token_id=0",
                                      "+model.architecture.eos_token_id=2",
                                      "+model.architecture.bos_token_ids=[1]"])
def test_token_counts_and_token_ids_are_not_credentials(override):
    settings = settings_from_config(compose_config(["experiment=smoke", override]))
    assert settings.train_tokens and settings.analysis.per_token_domains == ()


@pytest.mark.parametrize("args, message", [
    (["+train.lrr=1e-3"], "unknown config key 'train.lrr'; did you mean train.lr?"),
    (["eval.val_tokens=0"], "eval.val_tokens=0 is a validation budget under one block"),
])
def test_cli_refuses_bad_input_in_one_line_with_exit_2_and_no_folder(tmp_path, args, message):
    results = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "gainbench", "experiment=smoke",
                           f"results_dir={results}", *args], capture_output=True, text=True,
                          timeout=300, env=subprocess_env(tmp_path / "cache"), cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"gainbench: error: {done.stderr.split('error: ')[1].strip()}"]
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not results.exists()


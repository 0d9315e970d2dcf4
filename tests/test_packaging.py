"""gainbench as an installed package: the configs ship inside it, one's own config folders extend
every group, and the console scripts are the commands (issue 18, item 1). The slow test builds
the wheel, installs it into a clean folder and runs it from another one."""

import json
import os
import shutil
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

import gainbench
from gainbench.cli import (check_group_choices, compose_settings, split_config_folders,
                           without_group_appends)
from gainbench.errors import GainbenchError
from gainbench.paths import CONFIG_DIR
from tests.conftest import load_script, subprocess_env

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
COMMANDS = {"gainbench-tables": "make_tables", "gainbench-figures": "make_figures",
            "gainbench-prepare-data": "prepare_data"}   # console script -> the script it replaces
# A user's experiment: the smoke preset's budget on one domain, a model of another family.
MY_EXPERIMENT = """\
# @package _global_
defaults:
  - override /model: tiny-gpt2
sequence:
  order: [kjv_bible]
train:
  seq_len: 64
  batch_size: 4
  tokens_per_stage: 512
eval:
  val_tokens: 256
  lm_eval:
    stages: none
"""


@pytest.fixture
def my_folder(tmp_path):
    """A user's config folder: an experiment and a method of their own."""
    folder = tmp_path / "my_configs"
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment" / "mine.yaml").write_text(MY_EXPERIMENT)
    (folder / "method").mkdir()
    (folder / "method" / "lora_r4.yaml").write_text(
        "defaults:\n  - lora\n  - _self_\noptions:\n  r: 4\n")
    return folder


def test_the_package_holds_the_configs():
    packaged = Path(gainbench.__file__).parent / "configs"
    assert (packaged / "config.yaml").is_file() and packaged.resolve() == CONFIG_DIR
    assert "configs/**/*.yaml" in PYPROJECT["tool"]["setuptools"]["package-data"]["gainbench"]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_console_script_is_the_script_it_replaces(command):
    module, _, function = PYPROJECT["project"]["scripts"][command].partition(":")
    main = getattr(import_module(module), function)
    assert load_script(REPO / "scripts" / f"{COMMANDS[command]}.py").main.__code__ is main.__code__


@pytest.mark.parametrize("way", ["--config-dir", "-cd", "--config-dir=", "hydra.searchpath"])
def test_a_folder_of_ones_own_extends_every_group(my_folder, way):
    folder_args = {"hydra.searchpath": [f"hydra.searchpath=[file://{my_folder}]"],
                   "--config-dir=": [f"--config-dir={my_folder}"]}.get(way, [way, str(my_folder)])
    argv = [*folder_args, "experiment=mine", "method=lora_r4"]
    assert split_config_folders(argv) == ([my_folder], ["experiment=mine", "method=lora_r4"])
    check_group_choices(argv)
    settings = compose_settings(argv)
    assert settings.model.name == "tiny-gpt2"
    assert [d.name for d in settings.domains] == ["kjv_bible"]
    assert settings.train_tokens == 512 and settings.method_options["r"] == 4


def test_a_plus_on_a_group_reads_as_the_choice(my_folder):
    assert without_group_appends(["+experiment=mine", "+train.lr=1", "++seed=1"]) == [
        "experiment=mine", "+train.lr=1", "++seed=1"]
    settings = compose_settings(["--config-dir", str(my_folder), "+experiment=mine"])
    assert settings.train_tokens == 512


def test_a_choice_in_no_folder_names_the_options_and_how_to_add_one(my_folder):
    with pytest.raises(GainbenchError, match=r"unknown experiment 'mine'; choose one of: .*smoke "
                                             r"\(or write experiment/mine.yaml in a folder of your "
                                             r"own and pass --config-dir FOLDER\)"):
        check_group_choices(["experiment=mine"])
    with pytest.raises(GainbenchError, match="unknown method 'lora_r8'; choose one of: .*lora_r4"):
        check_group_choices(["-cd", str(my_folder), "method=lora_r8"])


def test_a_checkpoint_path_without_a_model_that_reads_it_names_model_hf():
    with pytest.raises(GainbenchError, match=r"model 'smollm2' \(source embedded_smollm2\) "
                                             r"does not read model.name_or_path=/some/folder; "
                                             r"add model=hf"):
        compose_settings(["model.name_or_path=/some/folder"])
    settings = compose_settings(["model=hf", "model.name_or_path=/some/folder"])
    assert settings.model.name_or_path == "/some/folder"


def _run(args, env, cwd):
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _source_tree(destination: Path) -> Path:
    """The checkout without its results, caches and build outputs (the build writes beside it)."""
    skip_top = {".git", "results", "runs", "build", "dist", "wandb", "outputs", ".benchmarks"}

    def ignore(folder, names):
        top = Path(folder) == REPO
        return [n for n in names if (top and n in skip_top) or n in ("__pycache__", ".pytest_cache")
                or n.endswith(".egg-info")]

    return Path(shutil.copytree(REPO, destination, symlinks=True, ignore=ignore))


@pytest.mark.slow  # builds and installs the wheel, runs the smoke protocol twice and the tables
def test_the_wheel_runs_from_any_folder_with_a_users_own_experiment(tmp_path, my_folder):
    source = _source_tree(tmp_path / "source")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(tmp_path / "wheels"), str(source)], os.environ, tmp_path)
    wheel, = (tmp_path / "wheels").glob("gainbench-*.whl")
    target = tmp_path / "installed"   # the dependencies are those already installed
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
          str(wheel)], os.environ, tmp_path)

    elsewhere = tmp_path / "elsewhere"   # no configs/ here or above
    elsewhere.mkdir()
    env = dict(subprocess_env(tmp_path / "cache"), PYTHONPATH=str(target))
    where = _run([sys.executable, "-c", "import gainbench.paths as p; print(p.CONFIG_DIR)"],
                 env, elsewhere)
    assert Path(where.stdout.strip()) == target / "gainbench" / "configs"

    results = tmp_path / "results"
    _run([sys.executable, "-m", "gainbench", "experiment=smoke", "eval.lm_eval.stages=none",
          "sequence.order=[kjv_bible]", f"results_dir={results}"], env, elsewhere)
    _run([sys.executable, "-m", "gainbench", "--config-dir", str(my_folder), "experiment=mine",
          f"results_dir={results}"], env, elsewhere)
    refused = subprocess.run([sys.executable, "-m", "gainbench", "model.name_or_path=/some/folder",
                              f"results_dir={results}"], capture_output=True, text=True, env=env,
                             cwd=elsewhere, timeout=300)
    assert refused.returncode == 2 and refused.stderr.strip().endswith("; add model=hf to run that "
                                                                       "checkpoint"), refused.stderr
    records = [json.loads(path.read_text()) for path in results.glob("*/run.json")]
    assert {r["config"]["model"]["name"]: r["finished_stages"] for r in records} == {
        "tiny-llama": [0, 1], "tiny-gpt2": [0, 1]}

    tables = _run([str(target / "bin" / "gainbench-tables"), str(results), "--tables", "runs"],
                  env, elsewhere)
    rows = [line for line in tables.stdout.splitlines() if line.startswith("| tiny-")]
    assert sorted(row.split("|")[1].strip() for row in rows) == ["tiny-gpt2", "tiny-llama"]
    assert all("1/1" in row for row in rows), tables.stdout

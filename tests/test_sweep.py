"""The learning-rate sweep preset through Hydra's submitit_local launcher, then the fronts."""

import json
from pathlib import Path
import subprocess
import sys

import pytest

from gainbench.results.runs import load_runs
from gainbench.results.tables import build_tables
from tests.conftest import compose_config, subprocess_env

TINY_BUDGET = ["model=tiny-llama", "train.seq_len=64", "train.tokens_per_stage=512",
               "eval.val_tokens=256", "eval.lm_eval.stages=none", "eval.diagnostics.stages=none",
               "sequence.order=[kjv_bible,icd10_medical]"]


def test_sweep_presets_compose_with_each_methods_lr_scaled():
    cfg = compose_config(["experiment=lr_sweep_cpu", "method=lora", "lr_scale=4"])
    assert cfg.train.lr == pytest.approx(4 * 2e-4) and cfg.method.lr == pytest.approx(2e-4)
    assert list(cfg.sequence.order) == ["wiki_history", "kjv_bible", "icd10_medical"]
    assert cfg.eval.lm_eval.stages == "none"
    assert compose_config(["experiment=lr_sweep", "method=gain"]).train.lr == pytest.approx(3e-3)


@pytest.mark.slow
def test_lr_sweep_through_submitit_local_gives_one_folder_per_point(tmp_path):
    subprocess.run([sys.executable, "-m", "gainbench", "-m", "experiment=lr_sweep",
                    "hydra/launcher=submitit_local", "method=gain,lora", "lr_scale=1,4", "seed=0,1",
                    f"results_dir={tmp_path}", *TINY_BUDGET],
                   check=True, capture_output=True, text=True, timeout=600,
                   env=subprocess_env(tmp_path / ".cache"))
    folders = sorted(p for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert len(folders) == 8  # 2 methods x 2 lrs x 2 seeds, each named by its run id
    metas = [json.loads((f / "run.json").read_text()) for f in folders]
    assert all(m["finished_stages"] == [0, 1, 2] for m in metas)
    assert {(m["config"]["method"]["name"], m["config"]["train"]["lr"], m["config"]["seed"])
            for m in metas} == {(m, lr * k, s) for m, lr in (("gain", 3e-3), ("lora", 2e-4))
                                for k in (1, 4) for s in (0, 1)}

    runs = load_runs([tmp_path])
    assert sorted({r.variant for r in runs}) == ["gain (lr=0.003)", "gain (lr=0.012)",
                                                 "lora (lr=0.0002)", "lora (lr=0.0008)"]
    (_, matched), = build_tables([tmp_path], ["matched"])["matched"]
    assert set(matched.index.get_level_values("method A")) == {"gain"}
    assert set(matched.index.get_level_values("method B")) == {"lora"}
    assert matched["reading"].notna().all()


def test_l2_sweep_preset_is_lora_l2_over_its_penalty():
    cfg = compose_config(["experiment=l2_sweep", "method.options.l2=10"])
    assert cfg.method.name == "lora_l2" and cfg.method.options.l2 == 10


@pytest.mark.slow
def test_a_submitit_job_with_two_tasks_is_one_ddp_run_of_two_ranks(tmp_path):
    # what `hydra/launcher=slurm hydra.launcher.tasks_per_node=8 train.strategy=fsdp` does on a node
    subprocess.run([sys.executable, "-m", "gainbench", "-m", "hydra/launcher=submitit_local",
                    "hydra.launcher.tasks_per_node=2", "train.strategy=ddp", "method=gain",
                    f"results_dir={tmp_path}", *TINY_BUDGET],
                   check=True, capture_output=True, text=True, timeout=600,
                   env=subprocess_env(tmp_path / ".cache"))
    (folder,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    meta = json.loads((folder / "run.json").read_text())
    assert meta["world_size"] == 2 and meta["finished_stages"] == [0, 1, 2]
    # the run id ignores the strategy: the single-process run of this config resumes this folder
    single = compose_config(["method=gain", f"results_dir={tmp_path}", *TINY_BUDGET])
    from gainbench.settings import settings_from_config
    assert settings_from_config(single).run_id == folder.name


def _readme_cluster_commands():
    """The `python -m gainbench -m ...` commands of the first block of docs/cluster.md."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "cluster.md").read_text()
    block = page.split("```bash")[1].split("```")[0]
    commands = block.replace("\\\n", " ").splitlines()
    return [line.split("#")[0].split()[4:] for line in commands
            if line.startswith("python -m gainbench -m") and "..." not in line]


@pytest.mark.parametrize("args", _readme_cluster_commands(), ids=lambda a: " ".join(a)[:60])
def test_every_readme_cluster_command_composes_for_each_of_its_jobs(args):
    from hydra import compose, initialize_config_dir

    from gainbench.cli import CONFIG_DIR
    from gainbench.settings import settings_from_config

    first_job = [a if "," not in a else a.split(",")[0] for a in args]  # one point of each sweep
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=first_job, return_hydra_config=True)
    settings = settings_from_config({k: v for k, v in cfg.items() if k != "hydra"})
    if settings.train.shard_weights:  # every method of the sweep, not only its first job
        from gainbench.methods import make_method

        methods = next(a for a in args if a.startswith("method=")).split("=")[1].split(",")
        assert all(make_method(m).supports_sharded_weights for m in methods)
    if "hydra/launcher=slurm" in args:
        launcher = cfg.hydra.launcher
        assert launcher._target_.endswith("SlurmLauncher") and launcher.max_num_timeout == 5
        assert launcher.partition == "gpu"

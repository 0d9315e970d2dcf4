"""Where a result came from: git state, package versions and numeric settings, for run.json."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft", "lm_eval", "datasets", "tokenizers", "accelerate",
            "hydra-core", "omegaconf", "pandas", "gainbench")


def git_state() -> dict:
    """Commit and dirtiness of the gainbench checkout, if it is one."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}
    return {"sha": sha or None, "dirty": dirty if sha else None}


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def numerics() -> dict:
    """Settings outside the config that can change a number in the last digits: CPU thread count
    (the order of reductions), deterministic-algorithm and TF32 switches, the CUDA stack."""
    import torch

    state = {"torch_threads": torch.get_num_threads(),
             "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
             "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        state.update(gpu=torch.cuda.get_device_name(), cudnn=torch.backends.cudnn.version(),
                     tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                     tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return state


def run_record(run_id: str, config: dict, model, domains, placement) -> dict:
    """run.json of a run just started: its config, where and with what it ran, its domains."""
    import time

    return {
        "run_id": run_id,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config,
        "git": git_state(),
        "versions": package_versions(),
        "numerics": numerics(),
        "device": str(placement.device),
        "world_size": placement.ranks.world_size,  # processes (train.strategy in config.train)
        "host": platform.node(),
        "domains": {d.name: d.info for d in domains},
        "model_params": sum(p.numel() for p in model.parameters()),
        "trainable_params": None,
        "stage_seconds": {},
        "finished_stages": [],
    }

"""Run lm-eval tasks on an in-memory HF causal LM and return tidy rows.

Traps handled here (DESIGN.md section 8):

* ``batch_size`` goes to ``HFLM``; ``simple_evaluate`` ignores it for a pre-built model.
* ``HFLM`` calls ``model.eval()``: the caller's train/eval mode is put back afterwards.
* ``simple_evaluate`` reseeds Python, NumPy and torch: the caller's RNG states are put back
  too, so evaluating between training stages does not change the training stream.
* ``log_samples`` defaults on and keeps every sample in memory: off.
* Our tasks (``tasks/``) are indexed alone when they are all that is asked (about 4 s saved);
  a built-in lm-eval name such as ``boolq`` needs the full index, which includes ours.
* Every ``simple_evaluate`` ends with ``add_env_info``, torch's ``collect_env`` (a ``pip list``
  subprocess, ~1 s): during our own call it is served from a once-per-process cache
  (``_env_info_once``); other users of lm-eval in the process see the library unchanged. It was
  69% of a smoke run's time (benchmarks/protocol_profile.py: smoke run 2.4x faster); run.json
  has the versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np
import torch

from gainbench.errors import GainbenchError, first_line

TASKS_DIR = Path(__file__).resolve().parent / "tasks"

# Warnings lm-eval emits for what we do on purpose: an in-memory model, a custom dataset
# loader, an explicit num_fewshot for tasks that set none.
_EXPECTED_WARNINGS = re.compile(
    r"`pretrained` model kwarg is not of type `str`"
    r"|Passed an already-initialized model through `pretrained`"
    r"|Custom kwargs can be passed to `--metadata`"
    r"|Overwriting default num_fewshot of \S+ from None to"
)


def list_local_tasks() -> list[str]:
    """Names of the offline tasks shipped in ``gainbench/evaluation/tasks``."""
    return sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))


def _quiet_lm_eval() -> None:
    """lm-eval logs at INFO under two logger names; keep only real warnings."""
    for name in ("lm_eval", "lm-eval"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("lm_eval.models.huggingface", "lm_eval.api.task", "lm_eval.evaluator"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropExpected) for f in logger.filters):
            logger.addFilter(_DropExpected())


class _DropExpected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _EXPECTED_WARNINGS.search(record.getMessage())


@cache
def _task_manager(local_only: bool, include_path: str | None = None):
    """Built once per process: indexing the built-in tasks walks 14,000+ YAML files."""
    from lm_eval.tasks import TaskManager

    paths = [str(TASKS_DIR)] + ([str(include_path)] if include_path else [])
    return TaskManager(include_path=paths, include_defaults=not local_only)


def _count(results: dict, name: str) -> int:
    """Examples evaluated for a task; for a group (e.g. mmlu), the sum over its subtasks."""
    if name in results.get("n-samples", {}):
        return int(results["n-samples"][name]["effective"])
    children = results.get("group_subtasks", {}).get(name, [])
    return sum(_count(results, child) for child in children)


def _rows(results: dict) -> list[dict]:
    rows = []
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            # Keys look like "acc,none" / "acc_stderr,none"; "alias", "name", "sample_len" are bookkeeping.
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append({
                "eval_name": task,
                "metric": metric if filt == "none" else f"{metric},{filt}",
                "value": float(value),
                "stderr": float(stderr) if isinstance(stderr, (int, float)) else math.nan,
                "n": _count(results, task),
            })
    return rows


def _configs_hash(configs: dict) -> str:
    """Hash of the task definitions, leaving out where the YAML happens to sit on disk."""
    clean = {}
    for task, cfg in configs.items():
        cfg = dict(cfg)
        cfg["metadata"] = {k: v for k, v in (cfg.get("metadata") or {}).items() if k != "config_source"}
        clean[task] = cfg
    blob = json.dumps(clean, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


_ENV_INFO: dict = {}


@contextmanager
def _env_info_once():
    """While in this block, lm-eval's per-call environment report is a once-per-process one
    (same keys, values); the library's own ``add_env_info`` is put back on the way out."""
    import lm_eval.evaluator as evaluator

    compute = evaluator.add_env_info

    def cached(results: dict) -> None:
        if not _ENV_INFO:
            compute(_ENV_INFO)
        results.update(_ENV_INFO)

    evaluator.add_env_info = cached
    try:
        yield
    finally:
        evaluator.add_env_info = compute


def run_lm_eval(
    model,
    tokenizer,
    tasks: list[str],
    *,
    num_fewshot: int = 0,
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    include_path: str | None = None,
) -> tuple[list[dict], dict]:
    """Evaluate ``model`` (already on its device) on lm-eval ``tasks``.

    Returns ``(rows, provenance)``: one row per (task, metric) as
    ``{"eval_name", "metric", "value", "stderr" (nan if lm-eval gives none), "n"}``, and
    ``{"lm_eval_version", "task_versions", "n_shot", "configs_hash"}``. ``stderr`` is lm-eval's
    standard error of the mean over the task's ``n`` items (sample standard deviation / sqrt(n);
    for an accuracy p, sqrt(p (1 - p) / (n - 1))): it covers which items were drawn, nothing else.
    Every metric lm-eval reports is kept (``acc`` and ``acc_norm`` both); which one a task is
    reported by is the results' choice (``eval.lm_eval.headline_metrics``).
    ``limit`` caps the examples per task (the first ``limit`` of each). ``include_path``: a
    folder of the user's own lm-eval task YAMLs, indexed beside gainbench's offline tasks.
    A process whose ``LOCAL_RANK`` is not 0 gets ``([], {})``: lm-eval reports on one process.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    _quiet_lm_eval()
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    if not tasks:
        raise GainbenchError("no lm-eval tasks given; name at least one, e.g. gb_boolq_mini")
    local = list_local_tasks()
    local_manager = _task_manager(True, include_path)
    local_only = all(t in local_manager.all_tasks for t in tasks)
    manager = local_manager if local_only else _task_manager(False, include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise GainbenchError(
            f"unknown lm-eval task(s) {unknown}; use one of gainbench's offline tasks {local} "
            "or any built-in lm-eval task name (e.g. boolq, hellaswag; see `lm-eval ls tasks`)"
        )

    was_training = model.training
    py_state, np_state = random.getstate(), np.random.get_state()
    # fork_rng saves and restores torch's CPU RNG and that of the model's GPU, if any
    # (naming the device avoids its warning on nodes with several visible GPUs).
    device = getattr(model, "device", torch.device("cpu"))
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        try:
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            with _env_info_once():
                results = lm_eval.simple_evaluate(
                    model=lm,
                    tasks=tasks,
                    num_fewshot=num_fewshot,
                    limit=limit,
                    log_samples=False,
                    task_manager=manager,
                    random_seed=seed,
                    numpy_random_seed=seed,
                    torch_random_seed=seed,
                    fewshot_random_seed=seed,
                )
        except OSError as err:  # ConnectionError and hub/offline errors are OSErrors
            if local_only:
                raise  # our tasks read a file shipped next to their YAML: a real bug
            # Built-in tasks fetch their dataset from the HF hub; offline that fails here.
            raise GainbenchError(
                f"lm-eval could not load the data of {tasks} ({type(err).__name__}: {first_line(err)}); "
                "built-in tasks need their HF dataset in the local cache (HF_DATASETS_CACHE) "
                f"- download it where the hub is reachable, or use the offline tasks {local}"
            ) from err
        finally:
            model.train(was_training)
            random.setstate(py_state)
            np.random.set_state(np_state)

    if results is None:
        # lm-eval reports on the process with LOCAL_RANK 0 only: under train.shard_weights every
        # rank evaluates (the forward passes need them all) and rank 0 keeps the rows.
        return [], {}
    provenance = {
        "lm_eval_version": lm_eval.__version__,
        "task_versions": dict(results["versions"]),
        "n_shot": dict(results.get("n-shot", {})),
        "configs_hash": _configs_hash(results.get("configs", {})),
    }
    return _rows(results), provenance

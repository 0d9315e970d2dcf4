"""``python -m gainbench`` / ``gainbench``: a thin Hydra entry that calls :func:`gainbench.protocol.run`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from gainbench.errors import GainbenchError, Interrupted, first_line
from gainbench.paths import CONFIG_DIR  # noqa: F401  (cli.CONFIG_DIR stays importable)

CHOICE_GROUPS = ("model", "method", "sequence", "train", "eval", "experiment", "logger", "analysis")


def check_group_choices(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Fail early, in one line, on ``model=nope``; Hydra's own message is a page long."""
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in CHOICE_GROUPS or value in ("", "null"):
            continue
        options = sorted(p.stem for p in (config_dir / key).glob("*.yaml"))
        for choice in value.split(","):  # multirun: model=a,b
            if choice not in options:
                raise GainbenchError(f"unknown {key} '{choice}'; choose one of: {', '.join(options)} "
                                     f"(or add configs/{key}/{choice}.yaml)")


def check_override_keys(argv: list[str]) -> None:
    """Fail early, in one line, on ``train.lrr=1e-3`` or ``+train.lrr=1e-3``, naming the nearest
    known key: Hydra would refuse the first in a page that suggests the second, which it accepts."""
    from gainbench.config.fields import refuse_secrets
    from gainbench.config.schema import check_override_path

    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or arg.startswith("-") or key.startswith("~"):
            continue
        key = key.lstrip("+")
        if key in CHOICE_GROUPS or key.startswith("hydra") or "/" in key or "@" in key:
            continue
        nested = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        refuse_secrets(nested)   # a credential is refused as one, not as an unknown key
        check_override_path(key)


def compose_settings(overrides: list[str]):
    """The RunSettings ``python -m gainbench <overrides>`` would run with (for scripts that plan
    or prepare runs without starting one)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from gainbench.settings import settings_from_config

    check_group_choices(overrides)
    check_override_keys(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except HydraException as err:
        raise GainbenchError(f"cannot compose the config ({first_line(err)}); fix the override") from None
    return settings_from_config(cfg)


def _offline_when_nothing_needs_the_hub(cfg: DictConfig) -> None:
    """The embedded default needs no hub: say so before transformers is imported, so no
    library spends time on a lookup that cannot succeed on an offline machine."""
    from gainbench.evaluation.lm_eval_bridge import list_local_tasks

    tasks = cfg.get("eval", {}).get("lm_eval", {}).get("tasks") or []
    if cfg.model.source != "hub" and set(tasks) <= set(list_local_tasks()):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    _offline_when_nothing_needs_the_hub(cfg)
    from gainbench.protocol import run

    in_sweep = _in_one_process_sweep()
    try:
        run(cfg)
        _SWEEP_JOBS.append(None)
    except Interrupted as err:
        print(f"gainbench: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except GainbenchError as err:
        if in_sweep:
            # One bad job (a NaN at the grid's highest lr, say) must not end the other jobs of
            # `-m` on the basic launcher; it is reported, its run folder holds only the stages
            # it finished, and the sweep ends non-zero after naming it (main). Separate-process
            # launchers (submitit) see each job's exit code.
            print(f"gainbench: error (this sweep job; the sweep goes on): {err}", file=sys.stderr)
            _SWEEP_JOBS.append(_job_label(cfg))
            return
        _fail(err)


# One entry per job of a one-process sweep: None when it finished, else its label.
_SWEEP_JOBS: list[str | None] = []


def _job_label(cfg: DictConfig) -> str:
    """The failed job's run id, or its overrides when its config could not be read."""
    from hydra.core.hydra_config import HydraConfig

    from gainbench.settings import settings_from_config

    try:
        return settings_from_config(cfg).run_id
    except GainbenchError:
        return f"job {HydraConfig.get().job.num} ({HydraConfig.get().job.override_dirname})"


def _in_one_process_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    return hydra_cfg.mode == RunMode.MULTIRUN and "BasicLauncher" in str(hydra_cfg.launcher.get("_target_"))


def _fail(err: Exception) -> None:
    print(f"gainbench: error: {err}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # we tokenise in one process
    try:
        check_group_choices(sys.argv[1:])
        check_override_keys(sys.argv[1:])
    except GainbenchError as err:
        _fail(err)
    try:
        _hydra_main()
    except KeyboardInterrupt:  # before the protocol started (composing, importing)
        print(f"gainbench: {Interrupted(130)}", file=sys.stderr)
        sys.exit(130)
    failed = [label for label in _SWEEP_JOBS if label is not None]
    if failed:
        print(f"gainbench: {len(failed)} of {len(_SWEEP_JOBS)} jobs failed: {', '.join(failed)}",
              file=sys.stderr)
        sys.exit(1)

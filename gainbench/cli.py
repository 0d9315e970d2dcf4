"""``python -m gainbench`` / ``gainbench``: a thin Hydra entry that calls :func:`gainbench.protocol.run`.

Before Hydra starts, the command line is checked in one-line errors: group choices (against the
packaged configs and the user's own folders), override keys, and the extras a choice needs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from gainbench.errors import GainbenchError, Interrupted, first_line
from gainbench.extras import require_extra
from gainbench.paths import CONFIG_DIR

CHOICE_GROUPS = ("model", "method", "sequence", "train", "eval", "experiment", "logger", "analysis")
# Hydra's flags that add a config folder to the search path (the next argument, or after "=").
CONFIG_DIR_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp")
# What a command-line choice needs beyond the core install: (group, choice) -> extra.
CHOICE_EXTRAS = {("logger", "wandb"): "wandb", ("hydra/launcher", "slurm"): "slurm",
                 ("hydra/launcher", "submitit_slurm"): "slurm",
                 ("hydra/launcher", "submitit_local"): "slurm"}


def split_config_folders(argv: list[str]) -> tuple[list[Path], list[str]]:
    """The config folders the command line adds to Hydra's search path, and the other arguments.
    The folders come from ``--config-dir DIR`` (``-cd``, ``--config-path``, ``-cp``, with the
    folder next or after ``=``) and ``hydra.searchpath=[file://DIR,pkg://module]``; each extends
    every group. A folder that does not exist is left for Hydra to report."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    folders, rest = [], []
    args = iter(argv)
    for arg in args:
        flag, sep, value = arg.partition("=")
        if flag in CONFIG_DIR_FLAGS:
            folders.append(Path(value if sep else next(args, "")).expanduser().absolute())
        elif flag.lstrip("+") == "hydra.searchpath" and sep:
            try:
                entries = OverridesParser.create().parse_overrides([arg])[0].value() or []
            except Exception:  # a syntax error: Hydra names it itself
                rest.append(arg)
                continue
            folders += [path for path in map(_search_path_folder, entries) if path]
        else:
            rest.append(arg)
    return folders, rest


def _search_path_folder(entry: str) -> Path | None:
    """The folder of one ``hydra.searchpath`` entry (no scheme means ``file://``, as in Hydra)."""
    scheme, sep, location = str(entry).partition("://")
    if not sep:
        scheme, location = "file", entry
    if scheme == "file":
        return Path(location).expanduser().absolute()
    if scheme == "pkg":
        from importlib.resources import files

        try:
            return Path(str(files(location.replace("/", "."))))
        except (ImportError, TypeError):
            return None
    return None


def group_options(group: str, folders: list[Path]) -> list[str]:
    """Every choice of ``group`` in ``folders`` (``sub/name`` for a nested file), sorted."""
    return sorted({path.relative_to(folder / group).with_suffix("").as_posix()
                   for folder in folders for path in (folder / group).rglob("*.yaml")})


def check_group_choices(argv: list[str]) -> None:
    """Fail early, in one line, on ``model=nope``; Hydra's own message is a page long. The
    choices are the packaged configs' and those of the user's folders (``split_config_folders``)."""
    folders = [CONFIG_DIR, *split_config_folders(argv)[0]]
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in CHOICE_GROUPS or value in ("", "null"):
            continue
        options = group_options(key, folders)
        for choice in value.split(","):  # multirun: model=a,b
            if choice not in options:
                raise GainbenchError(f"unknown {key} '{choice}'; choose one of: "
                                     f"{', '.join(options)} (or write {key}/{choice}.yaml in a "
                                     "folder of your own and pass --config-dir FOLDER)")


def without_group_appends(argv: list[str]) -> list[str]:
    """``+experiment=mine`` read as ``experiment=mine``: every gainbench group is already in the
    defaults list, where Hydra's ``+`` (append) fails with "Multiple values for experiment"."""
    return [arg[1:] if arg.startswith("+") and not arg.startswith("++")
            and arg[1:].partition("=")[0] in CHOICE_GROUPS else arg for arg in argv]


def check_extras(argv: list[str]) -> None:
    """Fail early, in one line naming the pip command, on a choice whose extra is not installed
    (``logger=wandb`` without wandb, ``hydra/launcher=slurm`` without the submitit launcher)."""
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        for choice in value.split(",") if sep else ():
            if (key, choice) in CHOICE_EXTRAS:
                require_extra(CHOICE_EXTRAS[key, choice], f"{key}={choice}")


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

    overrides = without_group_appends(overrides)
    check_group_choices(overrides)
    check_override_keys(overrides)
    folders, overrides = split_config_folders(overrides)
    if folders:  # compose() takes no --config-dir: every folder goes in as one search path
        overrides.append("hydra.searchpath=[" + ",".join(f"file://{f}" for f in folders) + "]")
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
        # a preset or a user's YAML may choose it too: checked before any run folder exists
        if cfg.logger.get("name") == "wandb":
            require_extra("wandb", "logger=wandb")
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
    sys.argv[1:] = without_group_appends(sys.argv[1:])  # Hydra reads sys.argv
    try:
        check_group_choices(sys.argv[1:])
        check_override_keys(sys.argv[1:])
        check_extras(sys.argv[1:])
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

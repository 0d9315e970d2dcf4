"""Every command the README and docs/ show still works as written.

Each ``python -m gainbench ...`` (or ``torchrun ... -m gainbench ...``) in a shell block or inline
code is composed and read by the schema exactly as the command line would (unknown keys, bad
values and stale spellings such as a ``+`` on a key that now has a default fail here), taking the
first value of a sweep (``a,b,c``), and then run in smoke form (slow): the same overrides with the
tiny model, two small domains, a few blocks, no lm-eval and one process appended last, so every
documented choice of method, experiment, eval suite, analysis and option goes through the whole
protocol here (the real runs need a hub model, a GPU cluster or hours; the multi-process paths
are run in tests/test_distributed.py). Every script, benchmark and console script named must
exist.
"""

import re
import shlex
from pathlib import Path

import pytest

from gainbench.cli import compose_settings

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Hydra's own flags and launcher settings: they do not change the composed gainbench config
HYDRA_FLAGS = {"-m", "--multirun", "--cfg", "job", "--resolve", "--help"}


def _shell_lines(text: str) -> list[str]:
    """Lines of ```bash blocks (continuations joined) and inline `code` spans."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines += block.replace("\\\n", " ").splitlines()
    lines += re.findall(r"`([^`\n]+)`", text)
    return [line.split(" #")[0].strip() for line in lines]


def _gainbench_commands() -> list[tuple[str, list[str]]]:
    found = {}
    for page in PAGES:
        for line in _shell_lines(page.read_text()):
            for part in line.split("&&"):
                words = shlex.split(part) if "python -m gainbench" in part or "-m gainbench" in part else []
                if not words or "<" in part or "..." in part or "~" in part:
                    continue
                args = words[words.index("gainbench") + 1:]
                found.setdefault(" ".join(args), (page.name, args))
    return sorted(found.values(), key=lambda item: " ".join(item[1]))


def _overrides(args: list[str]) -> list[str]:
    overrides = []
    args = iter(args)
    for arg in args:
        if arg in ("--config-dir", "-cd"):  # compose_settings takes a config folder as it is
            overrides += [arg, next(args)]
            continue
        if arg.startswith(("--config-dir=", "hydra.searchpath=")):
            overrides.append(arg)
            continue
        if arg in HYDRA_FLAGS or arg.startswith(("hydra/", "hydra.")):
            continue
        key, _, value = arg.partition("=")
        if "," in value and not value.startswith("["):  # a sweep: its first value
            value = value.split(",")[0]
        overrides.append(f"{key}={value}")
    return overrides


COMMANDS = _gainbench_commands()


def test_the_pages_show_commands():
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("page, args", COMMANDS, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_a_documented_command_composes(page, args):
    settings = compose_settings(_overrides(args))
    assert settings.run_id


def test_every_script_and_benchmark_named_exists():
    named = set()
    for page in PAGES:
        named |= set(re.findall(r"\b((?:scripts|benchmarks)/[\w./-]+\.(?:py|sh))", page.read_text()))
    assert named
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, missing


def test_every_console_script_named_is_declared():
    import tomllib

    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
    named = set()
    for page in PAGES:
        named |= set(re.findall(r"\b(gainbench-[a-z-]+[a-z])\b", page.read_text()))
    assert named and named <= declared, named - declared


# What makes a documented command short enough to run here: the tiny model on two embedded
# domains, a few blocks, no lm-eval, one process. Appended last, so these win over the command's.
SMOKE_FORM = ["model=tiny-llama", "sequence=embedded8", "sequence.order=[wiki_history,kjv_bible]",
              "train.seq_len=64", "train.batch_size=4", "train.tokens_per_stage=256",
              "eval.val_tokens=128", "eval.lm_eval.stages=none", "eval.diagnostics.stages=none",
              "train.strategy=single", "train.shard_weights=false", "model.dtype=float32",
              "train.precision=fp32", "analysis.per_token.domains=[kjv_bible]"]


@pytest.mark.slow
@pytest.mark.parametrize("page, args", COMMANDS, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_a_documented_command_runs_in_smoke_form(page, args, tmp_path):
    """The command's first job, on the tiny model and two small domains (the real ones need a
    hub model, a GPU cluster or an hour): its choices of method, experiment, eval suite,
    analysis and options all run through the whole protocol."""
    import contextlib
    import io

    from gainbench.cli import split_config_folders
    from gainbench.protocol import run
    from tests.conftest import compose_config

    folders, overrides = split_config_folders(_overrides(args))
    assert not folders  # no documented command needs a config folder of its own
    with contextlib.redirect_stdout(io.StringIO()):
        run_dir = run(compose_config(overrides + SMOKE_FORM + [f"results_dir={tmp_path}"]))
    assert (run_dir / "rows.parquet").exists()

"""Every command the README and docs/ show still works as written.

Each ``python -m gainbench ...`` (or ``torchrun ... -m gainbench ...``) in a shell block or inline
code is composed and read by the schema exactly as the command line would (unknown keys, bad
values and stale spellings such as a ``+`` on a key that now has a default fail here), taking the
first value of a sweep (``a,b,c``). Running them is left to the tests of what they run: the smoke
preset runs end to end in tests/test_protocol.py, multi-process commands in
tests/test_distributed.py, the cluster launchers only where a cluster is (they are composed here).
Every script or benchmark named must exist.
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

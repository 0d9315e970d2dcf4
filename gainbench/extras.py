"""The optional extras of pyproject.toml, and the one-line error that names the one a command
needs, raised before the command starts any work (no run folder, no sweep, no half-drawn figure)."""

from __future__ import annotations

import importlib.util

from gainbench.errors import GainbenchError

# extra -> the modules whose absence means it is not installed
EXTRAS = {
    "wandb": ("wandb",),
    "figures": ("matplotlib",),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "submitit"),
}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (wandb alone takes seconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # its parent package is missing, or it is blocked (None)
        return False


def require_extra(extra: str, needed_by: str) -> None:
    """Raise, naming the pip command, when ``extra`` is not installed; ``needed_by`` says what
    asked for it (``logger=wandb``)."""
    missing = [module for module in EXTRAS[extra] if not installed(module)]
    if missing:
        raise GainbenchError(f"{needed_by} needs {missing[0]}, which is not installed; "
                             f"pip install 'gainbench[{extra}]'")

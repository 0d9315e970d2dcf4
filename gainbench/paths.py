"""Where gainbench finds its configs and keeps downloaded wheels, converted models and tokenised
data."""

import os
from pathlib import Path

# The Hydra configs of this checkout (the CLI composes them; the cloze task reads its sequences).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def cache_dir() -> Path:
    """``$GAINBENCH_CACHE``, else ``$XDG_CACHE_HOME/gainbench``, else ``~/.cache/gainbench``."""
    root = os.environ.get("GAINBENCH_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "gainbench"

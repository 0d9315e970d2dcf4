"""Where gainbench keeps downloaded wheels, converted models and tokenised data."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$GAINBENCH_CACHE``, else ``$XDG_CACHE_HOME/gainbench``, else ``~/.cache/gainbench``."""
    root = os.environ.get("GAINBENCH_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "gainbench"

"""Where gainbench finds its configs and keeps downloaded wheels, converted models and tokenised
data.

The Hydra configs ship inside the package, as ``gainbench/configs/``, so an installed wheel runs
from any folder. In the repository that folder is a link to the top-level ``configs/``: the YAML
stays where contributors, the docs and git history find it, and setuptools follows the link when
it builds the wheel (``[tool.setuptools.package-data]`` in pyproject.toml), so the installed
package holds the files themselves. ``CONFIG_DIR`` is the resolved folder: ``<repo>/configs`` in a
checkout (editable install), ``site-packages/gainbench/configs`` in an installed one.
"""

import os
from pathlib import Path

# The Hydra configs the CLI composes (the cloze task reads its sequences from them too).
CONFIG_DIR = (Path(__file__).parent / "configs").resolve()


def cache_dir() -> Path:
    """``$GAINBENCH_CACHE``, else ``$XDG_CACHE_HOME/gainbench``, else ``~/.cache/gainbench``."""
    root = os.environ.get("GAINBENCH_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "gainbench"

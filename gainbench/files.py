"""Low-level file helpers shared by the run store, caches, in-stage checkpoints, methods and
analyses: an atomic write, the digest that names a cache entry, and a lazily read mapping of
tensors. They know nothing of runs or stages."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@functools.cache
def umask() -> int:
    """The process's umask, read once: from /proc (Linux), which leaves it untouched, else by
    setting and restoring it (not thread-safe, hence once, at the first write)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """``write(tmp)`` fills a temporary file beside ``path``, which is then renamed onto it:
    a reader (or a job killed mid-write) never sees half a file.

    The file gets the mode a plain ``open(path, "w")`` would (0644 under the usual 022 umask):
    mkstemp makes it 0600, which colleagues on a shared cluster could not read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())  # after the write: a writer may have replaced the file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def json_digest(value) -> str:
    """The sha256 (hex) of ``value`` as sorted-key JSON, a value JSON cannot hold written as its
    ``str``: the key of a cache entry, or of a run id, made from plain settings."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class StageTensors(Mapping):
    """Tensors by name, each made by ``read(name)`` only when it is looked up: a stage file read
    one tensor at a time (``RunStore.load_stage_state``), or a view of part of a stage's state."""

    def __init__(self, names, read):
        self._names = dict.fromkeys(names)  # ordered, and a set for lookups
        self._read = read

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise KeyError(name)
        return self._read(name)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

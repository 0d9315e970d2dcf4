"""Low-level file helpers shared by the run store, in-stage checkpoints, methods and analyses:
an atomic write and a lazily read mapping of tensors. They know nothing of runs or stages."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def atomic_write(path: Path, write) -> None:
    """``write(tmp)`` fills a temporary file beside ``path``, which is then renamed onto it:
    a reader (or a job killed mid-write) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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

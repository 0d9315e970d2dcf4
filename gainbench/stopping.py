"""Clean stops: Ctrl-C and SIGTERM end a run with one line and a conventional exit code.

A run folder is safe at any instant (every write is atomic and a stage is done only when its
rows are renamed into place), so stopping needs no clean-up: :func:`stops_cleanly` only turns
the interruption into :class:`~gainbench.errors.Interrupted`, naming the stage in flight, which
the command line prints as ``gainbench: interrupted during stage k; rerun the same command to
resume`` with exit code 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass

from gainbench.errors import Interrupted


class _Terminated(BaseException):
    """SIGTERM, raised where the run is, like KeyboardInterrupt (not an Exception, so library
    code that catches those cannot swallow it)."""


@dataclass
class StagePointer:
    """The stage in flight, kept up to date by the stage loop."""

    stage: int | None = None


def _raise_terminated(signum, frame):
    raise _Terminated


@contextlib.contextmanager
def stops_cleanly():
    """Yield a :class:`StagePointer`; Ctrl-C or SIGTERM inside becomes ``Interrupted``."""
    pointer = StagePointer()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        yield pointer
    except KeyboardInterrupt:
        raise Interrupted(128 + signal.SIGINT, pointer.stage) from None
    except _Terminated:
        raise Interrupted(128 + signal.SIGTERM, pointer.stage) from None
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)

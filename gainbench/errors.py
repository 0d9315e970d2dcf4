"""The one exception type users see: a problem they can fix, stated with its fix."""


class GainbenchError(Exception):
    """Bad input or environment. The message names the problem and the fix, in one line.

    The entry point prints it as ``gainbench: error: <message>`` and exits non-zero,
    without a traceback; anything else that escapes is a bug and keeps its traceback.
    """


def first_line(err: BaseException, default: str | None = None) -> str:
    """The first line of ``err``'s message, to quote inside a one-line GainbenchError; ``default``
    (or the exception's type name) when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else (default or type(err).__name__)


class Interrupted(Exception):
    """The run was stopped from outside: Ctrl-C (exit code 130) or SIGTERM (143; what SLURM sends
    on preemption or time-out). Every finished stage is on disk; rerunning resumes after it."""

    def __init__(self, exit_code: int, stage: int | None = None):
        super().__init__(exit_code, stage)
        self.exit_code, self.stage = exit_code, stage

    def __str__(self) -> str:
        where = (f"during stage {self.stage}" if self.stage is not None
                 else "before its first stage")
        return f"interrupted {where}; rerun the same command to resume"

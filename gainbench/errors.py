"""The one exception type users see: a problem they can fix, stated with its fix."""


class GainbenchError(Exception):
    """Bad input or environment. The message names the problem and the fix, in one line.

    The entry point prints it as ``gainbench: error: <message>`` and exits non-zero,
    without a traceback; anything else that escapes is a bug and keeps its traceback.
    """

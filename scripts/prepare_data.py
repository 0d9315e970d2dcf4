"""``python scripts/prepare_data.py ...`` is ``gainbench-prepare-data ...``
(gainbench/commands/prepare_data.py), kept so the commands written before the console script keep
working."""

import sys

from gainbench.commands.prepare_data import load_tokenizer, main  # noqa: F401  (tests load them here)

if __name__ == "__main__":
    sys.exit(main())

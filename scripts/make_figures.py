"""``python scripts/make_figures.py ...`` is ``gainbench-figures ...`` (gainbench/commands/figures.py),
kept so the commands written before the console script keep working."""

from gainbench.commands.figures import main

if __name__ == "__main__":
    main()

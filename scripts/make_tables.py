"""``python scripts/make_tables.py ...`` is ``gainbench-tables ...`` (gainbench/commands/tables.py),
kept so the commands written before the console script keep working."""

from gainbench.commands.tables import main

if __name__ == "__main__":
    main()

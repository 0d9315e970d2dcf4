"""``python scripts/match_lr.py <overrides> --targets 2 4 8 16 ...``: the matched comparison's
learning rates found by search (gainbench/study/command.py has the options, gainbench/study/ the
logic)."""

from gainbench.study.command import main

if __name__ == "__main__":
    main()

"""``gainbench-tables``: regenerate the paper's tables from run folders alone.

    gainbench-tables results/miniature/                 # every table, Markdown
    gainbench-tables runs/ --tables earlier downstream   # a selection
    gainbench-tables runs/ --out tables/                 # <name>.md and <name>.tex
    gainbench-tables runs/ --tables runs --columns method "BWT (nats)"
    gainbench-tables runs/sweep --tables matched --matched-at 2 4 8

Reads rows.parquet and run.json of every run folder under the given paths (one machine's or a
whole SLURM sweep's); runs no model. Tables are defined in gainbench/results/tables.py.
``python scripts/make_tables.py`` is the same command.
"""

import argparse
import sys
from pathlib import Path

from gainbench.errors import GainbenchError
from gainbench.results.render import render
from gainbench.results.tables import TABLES, build_tables


def main() -> None:
    parser = argparse.ArgumentParser(prog="gainbench-tables",
                                     description="Regenerate the paper's tables from run folders alone.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="tables: " + ", ".join(TABLES))
    parser.add_argument("paths", nargs="+", help="run folders or folders that contain them")
    parser.add_argument("--tables", nargs="+", metavar="NAME", help="only these tables")
    parser.add_argument("--latex", action="store_true", help="print LaTeX instead of Markdown")
    parser.add_argument("--out", type=Path, help="write <table>.md and <table>.tex here")
    parser.add_argument("--columns", nargs="+", help="only these columns (with one table)")
    parser.add_argument("--matched-at", nargs="+", type=float, metavar="GAIN",
                        help="in-domain gains (%%) at which the matched table compares methods "
                             "(default: the middle of each pair's common range)")
    args = parser.parse_args()
    try:
        tables = build_tables(args.paths, args.tables, args.matched_at)
    except (FileNotFoundError, KeyError, GainbenchError) as err:
        sys.exit(f"{parser.prog}: error: {err.args[0]}")
    if args.columns:
        if len(tables) != 1:
            sys.exit(f"{parser.prog}: error: --columns needs exactly one table (--tables NAME)")
        (name, parts), = tables.items()
        for caption, table in parts:
            unknown = [c for c in args.columns if c not in table.columns]
            if unknown:
                sys.exit(f"{parser.prog}: error: unknown column(s) {unknown}; "
                         f"the table has: {list(table.columns)}")
        tables[name] = [(caption, table[args.columns]) for caption, table in parts]
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, parts in tables.items():
            (args.out / f"{name}.md").write_text(render(name, parts, "md"))
            (args.out / f"{name}.tex").write_text(render(name, parts, "latex"))
        print(f"wrote {len(tables)} tables (.md and .tex) to {args.out}")
        return
    print("\n".join(render(name, parts, "latex" if args.latex else "md")
                    for name, parts in tables.items()))


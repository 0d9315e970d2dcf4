"""``gainbench-tables``: regenerate the paper's tables from run folders alone.

    gainbench-tables results/miniature/                 # the tables, Markdown
    gainbench-tables results/                           # one section per results folder
    gainbench-tables runs/ --tables earlier downstream   # a selection
    gainbench-tables runs/ --out tables/                 # <name>.md and <name>.tex
    gainbench-tables runs/ --tables runs --columns method "BWT (nats)"
    gainbench-tables runs/sweep --tables matched --matched-at 2 4 8
    gainbench-tables results/matched results/matched-16 --tables budget --matched-at 2 4 8

Reads rows.parquet and run.json of every run folder under the given paths (one machine's or a
whole SLURM sweep's); runs no model. Tables are defined in gainbench/results/tables.py, the
command in gainbench/results/render.py (``make_tables``). Printed, the per-run tables
(ppl_matrix, runs) appear only when named; ``--out`` writes every table. A folder holding several
results folders (``results/``) is read one results folder and sequence at a time, each under
its own heading (in its own subfolder of ``--out``); paths named together are read together.
``python scripts/make_tables.py`` is the same command.
"""

import argparse
import sys
from pathlib import Path

from gainbench.errors import GainbenchError
from gainbench.results.render import make_tables
from gainbench.results.tables import TABLES


def main() -> None:
    parser = argparse.ArgumentParser(prog="gainbench-tables", description="Regenerate the paper's "
                                     "tables from run folders alone.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="tables: " + ", ".join(TABLES))
    parser.add_argument("paths", nargs="+", help="run folders or folders that contain them")
    parser.add_argument("--tables", nargs="+", metavar="NAME", help="only these tables")
    parser.add_argument("--latex", action="store_true", help="print LaTeX instead of Markdown")
    parser.add_argument("--out", type=Path, help="write <table>.md and <table>.tex here")
    parser.add_argument("--columns", nargs="+", help="only these columns (with one table)")
    parser.add_argument("--matched-at", nargs="+", type=float, metavar="GAIN",
                        help="in-domain gains (%%) at which the matched table compares methods "
                             "(default: the middle of each pair's common range) and the budget "
                             "table reads each method (default: 2 4 8)")
    args = parser.parse_args()
    try:
        print(make_tables(args.paths, args.tables, args.out, "latex" if args.latex else "md",
                          args.columns, args.matched_at))
    except (FileNotFoundError, KeyError, ValueError, GainbenchError) as err:
        sys.exit(f"{parser.prog}: error: {err.args[0]}")

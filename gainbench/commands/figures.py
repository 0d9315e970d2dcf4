"""``gainbench-figures``: regenerate the paper's figures from run folders alone (PNG and PDF).

    gainbench-figures results/miniature/ --out results/figures/
    gainbench-figures runs/ --out figs/ --figures heatmap tradeoff
    gainbench-figures results/matched results/matched-16 --figures budget --matched-at 2 4 8 --out figs/

Reads rows.parquet, run.json and (for the per-token histograms) per_token/*.npy of every run
folder under the given paths; runs no model. Figures are defined in gainbench/results/figures.py
and drawn with matplotlib (``pip install 'gainbench[figures]'``). A folder of several results
folders (``results/``) is drawn one results folder and sequence at a time, each into its own
subfolder of ``--out`` (gainbench.results.figures.make_figures); paths named together are read
together, as the ``budget`` figure needs its budgets' folders. ``python scripts/make_figures.py``
is the same command.
"""

import argparse
import sys
from pathlib import Path

from gainbench.errors import GainbenchError
from gainbench.extras import require_extra
from gainbench.results.figures import FIGURES, make_figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="gainbench-figures", description="Regenerate the paper's "
                                     "figures (PNG and PDF) from run folders alone.",
                                     epilog="figures: " + ", ".join(FIGURES))
    parser.add_argument("paths", nargs="+", help="run folders or folders that contain them")
    parser.add_argument("--out", type=Path, required=True, help="folder for the image files")
    parser.add_argument("--figures", nargs="+", metavar="NAME", choices=list(FIGURES),
                        help="only these figures")
    parser.add_argument("--formats", nargs="+", default=["png", "pdf"])
    parser.add_argument("--matched-at", nargs="+", type=float, metavar="GAIN",
                        help="in-domain gains (%%) at which the budget figure reads each method "
                             "(default: 2 4 8)")
    args = parser.parse_args()
    try:
        require_extra("figures", "drawing figures")  # before any file is read or folder made
    except GainbenchError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        print(make_figures(args.paths, args.out, args.figures, tuple(args.formats),
                           args.matched_at))
    except (FileNotFoundError, GainbenchError) as err:
        sys.exit(f"{parser.prog}: error: {err.args[0]}")

"""Regenerate the comparison table from run folders alone.

    python scripts/make_tables.py results/            # Markdown to stdout
    python scripts/make_tables.py results/ --latex    # LaTeX

Reads rows.parquet and run.json of every run folder under the given paths; runs no model.
"""

import argparse

from gainbench.results.tables import comparison_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("paths", nargs="+", help="run folders or folders that contain them")
    parser.add_argument("--latex", action="store_true", help="LaTeX instead of Markdown")
    args = parser.parse_args()
    table = comparison_table(args.paths)
    if table.empty:
        raise SystemExit(f"no run folders (with run.json) under {args.paths}")
    styled = table.style.format(precision=2, na_rep="-").hide(axis="index")
    print(styled.to_latex() if args.latex else table.to_markdown(index=False, floatfmt=".2f"))


if __name__ == "__main__":
    main()

"""Regenerate the comparison table from run folders alone.

    python scripts/make_tables.py results/            # Markdown to stdout
    python scripts/make_tables.py results/ --latex    # LaTeX
    python scripts/make_tables.py results/ --columns method "BWT (nats)"   # a selection

Reads rows.parquet and run.json of every run folder under the given paths; runs no model.
"""

import argparse

from gainbench.results.tables import comparison_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("paths", nargs="+", help="run folders or folders that contain them")
    parser.add_argument("--latex", action="store_true", help="LaTeX instead of Markdown")
    parser.add_argument("--columns", nargs="+", help="only these columns (names as printed)")
    args = parser.parse_args()
    table = comparison_table(args.paths)
    if args.columns:
        unknown = [c for c in args.columns if c not in table.columns]
        if unknown:
            raise SystemExit(f"unknown column(s) {unknown}; the table has: {list(table.columns)}")
        table = table[args.columns]
    if table.empty:
        raise SystemExit(f"no run folders (with run.json) under {args.paths}")
    if args.latex:
        print(table.style.format(precision=2, na_rep="-").hide(axis="index").to_latex())
    else:  # missing cells print as "-", never as 0 or nan
        print(table.astype(object).where(table.notna(), None)
              .to_markdown(index=False, floatfmt=".2f", missingval="-"))


if __name__ == "__main__":
    main()

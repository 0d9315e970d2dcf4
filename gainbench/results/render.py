"""The tables as text: Markdown or LaTeX, each under its ``TABLES`` title and note.

``mean ± half-width`` where a table has a ``<col> ±`` column beside ``<col>``, ``-`` for a cell
no run could fill (never 0); columns in nats get two more decimals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gainbench.results.tables import CI, TABLES


def _merge_intervals(table: pd.DataFrame, precision: int) -> pd.DataFrame:
    """Numbers to text: ``x ± h`` where a ``<col> ±`` column holds h, ``-`` where missing.
    Columns in nats get two more decimals (their values are a hundred times smaller)."""
    def fmt(value, precision):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "-"
        if isinstance(value, (float, np.floating)):
            return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.{precision}f}"
        if isinstance(value, (int, np.integer)):
            return f"{value:,}"
        return str(value)

    out = pd.DataFrame(index=table.index)
    for col in table.columns:
        if str(col).endswith(CI):
            continue
        digits = precision + 2 if "nats" in str(col) else precision
        text = table[col].map(lambda v: fmt(v, digits))
        if f"{col}{CI}" in table.columns:
            half = table[f"{col}{CI}"]
            text = [t if t == "-" or pd.isna(h) else f"{t} ± {h:.{digits}f}"
                    for t, h in zip(text, half)]
        out[col] = text
    return out


def render(name: str, tables: list[tuple[str, pd.DataFrame]], fmt: str = "md",
           precision: int = 2) -> str:
    spec = TABLES[name]
    if not tables:   # say why there is no table, rather than write an empty file
        if fmt == "md":
            return f"### {spec.title}\n\n{spec.note}.\n\n({spec.missing}.)\n"
        if fmt == "latex":
            return (f"\\begin{{table}}\n\\caption{{{_latex(spec.title)}: {_latex(spec.note)}.}}\n"
                    f"({_latex(spec.missing)}.)\n\\end{{table}}\n")
        raise ValueError(f"unknown format {fmt!r} (md or latex)")
    parts = []
    for caption, table in tables:
        title = f"{spec.title}{f' ({caption})' if caption else ''}"
        text = _merge_intervals(table, precision)
        if not isinstance(table.index, pd.RangeIndex):   # index levels become leading columns
            text, table = text.reset_index(), table.reset_index()
        numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in text.columns]
        if fmt == "md":
            parts.append(f"### {title}\n\n{spec.note}.\n\n" + text.to_markdown(
                index=False, disable_numparse=True,
                colalign=["right" if n else "left" for n in numeric]) + "\n")
        elif fmt == "latex":
            styler = (text.style.hide(axis="index").format(escape="latex")
                      .format_index(escape="latex", axis=1))
            parts.append(styler.to_latex(caption=f"{title}: {spec.note}.", hrules=True))
        else:
            raise ValueError(f"unknown format {fmt!r} (md or latex)")
    return "\n".join(parts)


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                   "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                   "^": r"\textasciicircum{}"}


def _latex(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(c, c) for c in text)

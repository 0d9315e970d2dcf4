"""The tables as text: Markdown or LaTeX, each under its ``TABLES`` title and note.

``mean ± half-width`` where a table has a ``<col> ±`` column beside ``<col>``, ``-`` for a cell
no run could fill (never 0); columns in nats get two more decimals. Methods print under their
display names (``runs.display_variant``: ``GAIN-FFN``, ``LoRA (lr=0.0001)``); the frames keep
the registry names. Numeric columns are right-aligned, text columns left-aligned.

LaTeX is plain ASCII (every special character escaped, ``±`` as ``$\\pm$``), one ``table`` with a
booktabs ``tabular`` per frame: ``\\usepackage{booktabs}`` in the preamble and it compiles.
Negative numbers get a minus sign. The wide tables (runs, diagnostic, matched) are wider than a
page column: ``--columns`` selects what a paper needs.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from gainbench.results.runs import DISPLAY_NAMES, Study, display_variant
from gainbench.results.tables import CI, PER_RUN_TABLES, TABLES, build_studies

# Columns (or index levels) whose values are method variants, printed under display names.
METHOD_COLUMNS = ("method", "method A", "method B")


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


def _is_variant(name) -> bool:
    return str(name).partition(" (")[0] in DISPLAY_NAMES


def _cells(table: pd.DataFrame, precision: int) -> tuple[pd.DataFrame, list[bool]]:
    """The table as text cells (index levels as leading columns, display names) and, per
    column, whether it holds numbers (right-aligned)."""
    text = _merge_intervals(table, precision)
    if not isinstance(table.index, pd.RangeIndex):   # index levels become leading columns
        text, table = text.reset_index(), table.reset_index()
        text = text.astype(object).where(text.notna(), "-")   # a level not recorded (NA)
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in text.columns]
    for col in text.columns:
        if col in METHOD_COLUMNS:
            text[col] = text[col].map(display_variant)
    text.columns = [display_variant(c) if _is_variant(c) else str(c) for c in text.columns]
    return text, numeric


def render(name: str, tables: list[tuple[str, pd.DataFrame]], fmt: str = "md",
           precision: int = 2) -> str:
    spec = TABLES[name]
    if fmt not in ("md", "latex"):
        raise ValueError(f"unknown format {fmt!r} (md or latex)")
    if not tables:   # say why there is no table, rather than write an empty file
        if fmt == "md":
            return f"### {spec.title}\n\n{spec.note}.\n\n({spec.missing}.)\n"
        return (f"\\begin{{table}}\n\\caption{{{latex_escape(spec.title)}: "
                f"{latex_escape(spec.note)}.}}\n({latex_escape(spec.missing)}.)\n\\end{{table}}\n")
    parts = []
    for caption, table in tables:
        title = f"{spec.title}{f' ({display_variant(caption)})' if caption else ''}"
        text, numeric = _cells(table, precision)
        # why a cell is '-' where the frame says (aggregate.with_notes): beside the table, not a number
        note = "; ".join([spec.note, *table.attrs.get("notes", ())])
        if fmt == "md":
            parts.append(f"### {title}\n\n{note}.\n\n" + text.to_markdown(
                index=False, disable_numparse=True,
                colalign=["right" if n else "left" for n in numeric]) + "\n")
        else:
            parts.append(latex_table(text, numeric, f"{title}: {note}."))
    return "\n".join(parts)


def latex_table(text: pd.DataFrame, numeric: list[bool], caption: str) -> str:
    """One booktabs table of text cells, numeric columns right-aligned, everything escaped."""
    def cell(text, number):
        text = latex_escape(text)
        # a minus sign, not a hyphen, before a number ("-" alone: a missing cell)
        return re.sub(r"(?<![\w.])-(?=\d)", r"$-$", text) if number else text

    def row(cells, numbers):
        return " & ".join(cell(c, n) for c, n in zip(cells, numbers)) + r" \\"

    spec = "".join("r" if n else "l" for n in numeric)
    lines = [r"\begin{table}", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             row(text.columns, [False] * len(numeric)), r"\midrule",
             *(row(cells, numeric) for cells in text.itertuples(index=False)),
             r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# Every character LaTeX treats specially, and the non-ASCII ones gainbench prints, as plain
# ASCII LaTeX (the output compiles under any input encoding). ``<``, ``>`` and ``|`` print as
# other glyphs in LaTeX's default OT1 text font, ``[`` after ``\\`` would be an argument.
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
          "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
          "|": r"\textbar{}", "[": "{[}", "]": "{]}", "±": r"$\pm$", "³": r"$^3$", "²": r"$^2$",
          "×": r"$\times$", "−": "-", "–": "--", "—": "---", "…": r"\ldots{}", "≥": r"$\geq$",
          "≤": r"$\leq$", "→": r"$\rightarrow$", "≈": r"$\approx$"}


def latex_escape(text) -> str:
    """Text for a LaTeX caption or cell. Characters neither ASCII nor in ``_LATEX`` pass
    through (LaTeX's default UTF-8 input reads most accented letters)."""
    return "".join(_LATEX.get(c, c) for c in str(text))


def report(studies: list[tuple[Study, dict]], fmt: str = "md") -> str:
    """Every table of every study (``tables.build_studies``), each study under a heading when
    there are several."""
    parts = []
    for study, tables in studies:
        if len(studies) > 1:
            heading = f"{study.title}, {len(study.runs)} run{'s' if len(study.runs) != 1 else ''}"
            parts.append(f"## {heading}\n" if fmt == "md" else f"% {heading}\n")
        parts += [render(name, tables_, fmt) for name, tables_ in tables.items()]
    return "\n".join(parts)


def write_report(studies: list[tuple[Study, dict]], out: Path) -> list[Path]:
    """``<name>.md`` and ``<name>.tex`` of every table in ``out``, or in ``out/<study slug>/``
    when there are several studies."""
    written = []
    for study, tables in studies:
        folder = Path(out) / study.slug if len(studies) > 1 else Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        for name, parts in tables.items():
            for fmt, suffix in (("md", ".md"), ("latex", ".tex")):
                path = folder / f"{name}{suffix}"
                path.write_text(render(name, parts, fmt))
                written.append(path)
    return written


def make_tables(paths, names=None, out=None, fmt: str = "md", columns=None,
                matched_at=None) -> str:
    """What ``gainbench-tables`` (``scripts/make_tables.py``) does: the tables ``names`` of the
    runs under ``paths``, written as ``<name>.md`` / ``<name>.tex`` to ``out`` (every table by
    default) or returned as text (by default every table but the per-run ones,
    ``tables.PER_RUN_TABLES``, which a sweep makes hundreds of lines long: name them to see
    them). Runs are read in comparable groups (``runs.load_studies``): a folder of several
    results folders gives one section per results folder and sequence. ``columns`` keeps only
    those columns of the one table named. Errors: KeyError (unknown table or column),
    FileNotFoundError (no runs), ValueError (``columns`` without exactly one table)."""
    if columns and len(names or ()) != 1:
        raise ValueError("--columns needs exactly one table (--tables NAME)")
    if names is None and out is None:
        names = [name for name in TABLES if name not in PER_RUN_TABLES]
    studies = build_studies(paths, names, matched_at)
    if columns:
        for _, tables in studies:
            (name, parts), = tables.items()
            for _, table in parts:
                unknown = [c for c in columns if c not in table.columns]
                if unknown:
                    raise KeyError(f"unknown column(s) {unknown}; the table has: "
                                   f"{list(table.columns)}")
            tables[name] = [(caption, table[list(columns)]) for caption, table in parts]
    if out is not None:
        written = write_report(studies, out)
        where = f"{len(studies)} folders under {out}" if len(studies) > 1 else str(out)
        return f"wrote {len(written) // 2} tables (.md and .tex) to {where}"
    return report(studies, fmt)

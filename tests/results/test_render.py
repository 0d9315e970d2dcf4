"""Tables as a reader gets them: display names, right-aligned numbers, LaTeX that is escaped and
compiles, and a readable default over a folder of several results folders."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gainbench.results.render import latex_escape, make_tables, render
from gainbench.results.tables import PER_RUN_TABLES, TABLES, build_tables

GOLDEN = Path(__file__).parent / "golden" / "runs"
NASTY = "50% of a_b & c #1 {x} ~ ^ \\ <5> |W| [k] ± ³"


def _strip_escapes(tex: str) -> str:
    """The text with every backslash-escaped character (``\\%``, ``\\{``, ``\\\\``) removed."""
    out, i = [], 0
    while i < len(tex):
        if tex[i] == "\\":
            i += 2
            continue
        out.append(tex[i])
        i += 1
    return "".join(out)


def assert_sound_latex(tex: str) -> None:
    """ASCII only, no unescaped ``%`` (it would comment out the rest of a caption or row, its
    closing brace included), braces balanced and never closed before they open."""
    assert tex.isascii(), sorted({c for c in tex if not c.isascii()})
    plain = _strip_escapes(tex)
    assert "%" not in plain, [line for line in tex.splitlines() if "%" in _strip_escapes(line)]
    depth = 0
    for c in plain:
        depth += {"{": 1, "}": -1}.get(c, 0)
        assert depth >= 0, "a brace closes before it opens"
    assert depth == 0, "unbalanced braces"


@pytest.fixture(scope="module")
def golden_latex():
    tables = build_tables([GOLDEN])
    nasty = pd.DataFrame({"method": ["gain_ffn", "ia3"], NASTY: [1.5, np.nan],
                          f"{NASTY} ±": [0.25, np.nan], "note": [NASTY, "-"]})
    return ([render(name, parts, "latex") for name, parts in tables.items()]
            + [render("runs", [(NASTY, nasty)], "latex"), render("diagnostic", [], "latex")])


def test_latex_escapes_every_special_character():
    assert latex_escape("50% a_b & #1") == r"50\% a\_b \& \#1"
    assert latex_escape("{x} ± ³") == r"\{x\} $\pm$ $^3$"
    assert latex_escape("[k]") == "{[}k{]}"   # never read as \\'s optional argument
    assert_sound_latex(latex_escape(NASTY))


def test_every_table_is_sound_latex_with_numbers_right_aligned(golden_latex):
    for tex in golden_latex:
        assert_sound_latex(tex)
    adaptation = render("adaptation", build_tables([GOLDEN], ["adaptation"])["adaptation"], "latex")
    assert r"\begin{tabular}{llrrr}" in adaptation          # model, method | seeds, 2 metrics
    assert r"dPPL\% of each stage" in adaptation and r"$\pm$ = 95\% interval" in adaptation
    assert "GAIN-FFN &" in adaptation and "gain_ffn" not in adaptation
    nasty = golden_latex[-2]
    assert r"1.50 $\pm$ 0.25" in nasty and r"(IA)$^3$" in nasty
    assert r"(IA)$^3$ & - & -" in nasty                         # a missing cell stays "-"
    assert r"\begin{tabular}{lrl}" in nasty                 # method | number | text


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="no pdflatex (apt-get install texlive-latex-base)")
def test_every_table_compiles_with_pdflatex(golden_latex, tmp_path):
    # booktabs is in texlive-latex-recommended; with only the base, its rules become \hline
    preamble = (r"\documentclass{article}" "\n"
                r"\IfFileExists{booktabs.sty}{\usepackage{booktabs}}{\newcommand{\toprule}{\hline}"
                r"\newcommand{\midrule}{\hline}\newcommand{\bottomrule}{\hline}}" "\n")
    body = "\n\\clearpage\n".join(golden_latex)
    (tmp_path / "tables.tex").write_text(f"{preamble}\\begin{{document}}\n{body}\n\\end{{document}}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 1000
    log = (tmp_path / "tables.log").read_text(errors="replace")
    assert "Missing character" not in log and "Undefined control sequence" not in log


def test_markdown_prints_display_names_and_aligns_numbers_right():
    md = render("params", build_tables([GOLDEN], ["params"])["params"], "md")
    assert "| GAIN-FFN |" in md and "| LoRA     |" in md
    assert "|:---------|-------:|" in md                      # method left, count right


def _mixed_folder(root: Path) -> Path:
    for run in GOLDEN.iterdir():
        shutil.copytree(run, root / ("miniature" if "gain_ffn" in run.name else "sweep") / run.name)
    return root


def test_a_mixed_results_folder_prints_one_section_per_results_folder(tmp_path):
    text = make_tables([_mixed_folder(tmp_path)])
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections == [f"## {tmp_path / 'miniature'}: golden3 (3 domains: d1, d2, d3), 2 runs",
                        f"## {tmp_path / 'sweep'}: golden3 (3 domains: d1, d2, d3), 3 runs"]
    # the per-run tables are long over a sweep: printed only when named
    assert "### " + TABLES["ppl_matrix"].title not in text and "### " + TABLES["runs"].title not in text
    assert "| LoRA (lr=0.0001) |" in text and "order=" not in text
    named = make_tables([tmp_path], names=["ppl_matrix"])
    assert named.count("### " + TABLES["ppl_matrix"].title) == 5


def test_written_tables_of_several_folders_go_to_one_subfolder_each(tmp_path):
    message = make_tables([_mixed_folder(tmp_path / "results")], out=tmp_path / "tables")
    assert message.startswith(f"wrote {2 * len(TABLES)} tables")
    for study in ("miniature", "sweep"):
        for name in TABLES:   # --out writes every table, the per-run ones too
            assert (tmp_path / "tables" / study / f"{name}.tex").exists()
    assert set(PER_RUN_TABLES) <= set(TABLES)


def test_columns_of_one_table_and_their_errors():
    text = make_tables([GOLDEN], names=["runs"], columns=["method", "seed"])
    assert text.splitlines()[4].split() == ["|", "method", "|", "seed", "|"]
    with pytest.raises(ValueError, match="exactly one table"):
        make_tables([GOLDEN], columns=["method"])
    with pytest.raises(KeyError, match="unknown column"):
        make_tables([GOLDEN], names=["runs"], columns=["nope"])


def test_committed_latex_tables_are_sound():
    committed = sorted((Path(__file__).resolve().parents[2] / "results" / "tables").glob("*/*.tex"))
    for path in committed:
        assert_sound_latex(path.read_text())

"""The golden results folder (tests/results/golden/make_golden.py): every number the tables print
for it is stated here by hand, from the perplexities in that script. A changed formula fails."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gainbench.results.runs import load_runs
from gainbench.results.render import render
from gainbench.results.tables import TABLES, build_tables
from tests.results.conftest import SCRIPTS

GOLDEN = Path(__file__).parent / "golden" / "runs"
T95_1DF = 12.706204736174698  # Student t, 97.5% quantile, 1 degree of freedom


@pytest.fixture(scope="module")
def tables():
    return build_tables([GOLDEN])


def one(tables, name):
    (caption, table), = tables[name]
    return table


def test_variants_seeds_and_the_unfinished_run():
    runs = load_runs([GOLDEN])
    labels = sorted({(r.variant, r.seed, r.complete) for r in runs})
    assert labels == [("gain_ffn", 0, True), ("gain_ffn", 1, True),
                      ("lora (lr=0.0001)", 0, True), ("lora (lr=0.001)", 0, True),
                      ("lora (lr=0.001)", 1, False)]


def test_trainable_params(tables):
    table = one(tables, "params")
    assert table.loc["gain_ffn", "tiny"] == 100 and table.loc["lora", "tiny"] == 2000


def test_earlier_domain_change_mean_and_interval_over_seeds(tables):
    table = one(tables, "earlier").loc["tiny"]
    # gain_ffn seed 0: 9/10 and 17/20 of base -> -10%, -15%; seed 1: 8/10, 18/20 -> -20%, -10%
    seeds = np.array([-12.5, -15.0])
    assert table.loc["gain_ffn", "earlier dPPL% vs base"] == pytest.approx(-13.75)
    assert table.loc["gain_ffn", "earlier dPPL% vs base ±"] == pytest.approx(
        T95_1DF * seeds.std(ddof=1) / math.sqrt(2))
    # vs just-trained, seed 0: 9/8 and 17/16 -> +12.5%, +6.25%; seed 1: 8/7, 18/18
    assert table.loc["gain_ffn", "earlier dPPL% vs just-trained"] == pytest.approx(
        ((12.5 + 6.25) / 2 + (100 * (8 / 7 - 1) + 0.0) / 2) / 2)
    # lora lr=1e-4 ends exactly at the base model on d1, d2: a real 0, not a missing cell
    assert table.loc["lora (lr=0.0001)", "earlier dPPL% vs base"] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(table.loc["lora (lr=0.0001)", "earlier dPPL% vs base ±"])  # one seed
    # lora lr=1e-3: 12/10, 22/20 -> +20%, +10%; its seed 1 never finished and is not averaged
    assert table.loc["lora (lr=0.001)", "earlier dPPL% vs base"] == pytest.approx(15.0)
    assert table.loc["lora (lr=0.001)", "seeds"] == 1


def test_in_domain_adaptation_and_final_ppl(tables):
    table = one(tables, "adaptation").loc["tiny"]
    seed0 = (100 * (8 / 10 - 1) + 100 * (16 / 19 - 1) + 100 * (30 / 36 - 1)) / 3
    seed1 = (100 * (7 / 10 - 1) + 100 * (18 / 19 - 1) + 100 * (32 / 36 - 1)) / 3
    assert table.loc["gain_ffn", "in-domain dPPL%"] == pytest.approx((seed0 + seed1) / 2)
    final = ((9 * 17 * 30) ** (1 / 3) + (8 * 18 * 32) ** (1 / 3)) / 2
    assert table.loc["gain_ffn", "final PPL (geo-mean)"] == pytest.approx(final)


def test_transfer_and_forgetting_of_one_run(tables):
    runs = one(tables, "runs").set_index(["method", "seed"])
    line = runs.loc[("gain_ffn", 0)]
    log = math.log
    assert line["BWT (nats)"] == pytest.approx(((log(8) - log(9)) + (log(16) - log(17))) / 2)
    assert line["FWT (nats)"] == pytest.approx(((log(20) - log(19)) + (log(40) - log(36))) / 2)
    # best ever: d1 8 (stage 1), d2 16 (stage 2)
    assert line["forgetting (nats)"] == pytest.approx(((log(9) - log(8)) + (log(17) - log(16))) / 2)
    assert runs.loc[("lora (lr=0.001)", 1), "stages done"] == "1/3"
    assert np.isnan(runs.loc[("lora (lr=0.001)", 1), "BWT (nats)"])


def test_downstream_change_with_its_stderr(tables):
    (model, table), = tables["downstream"]
    assert model == "tiny"
    row = table.loc["t1 acc"]
    assert row["base acc (%)"] == pytest.approx(50.0)
    assert row["gain_ffn"] == pytest.approx((10.0 + 5.0) / 2)
    assert row["gain_ffn ±"] == pytest.approx(1.96 * 100 * math.hypot(0.05, 0.05))
    assert row["lora (lr=0.0001)"] == pytest.approx(-10.0)
    assert "lora (lr=0.001)" not in table.columns  # it ran no lm-eval: no column, not zeros


def test_ppl_matrix_round_trips(tables):
    matrices = dict(tables["ppl_matrix"])
    matrix = matrices["tiny-gain_ffn-golden3-seed0-lr0.003"]
    np.testing.assert_allclose(matrix.values, [[10, 20, 40], [8, 19, 38], [8.5, 16, 36], [9, 17, 30]])
    assert len(matrices["tiny-lora-golden3-seed1-lr0.001"]) == 2  # base + the one finished stage


def test_rendered_markdown_and_latex(tables):
    md = render("earlier", tables["earlier"], "md")
    # display names in print (the frames keep the registry names), numbers right-aligned
    assert "| tiny    | GAIN-FFN         |       2 |          -13.75 ± 15.88 |" in md
    assert "| LoRA (lr=0.0001) |" in md and "gain_ffn" not in md
    assert "0.00 |" in md  # the real zero
    runs_md = render("runs", tables["runs"], "md")
    unfinished = next(line for line in runs_md.splitlines() if "seed1-lr0.001" in line)
    assert "nan" not in unfinished and " - |" in unfinished  # missing, never 0 or nan
    latex = render("earlier", tables["earlier"], "latex")
    assert r"dPPL\%" in latex and r"\begin{tabular}{llrrr}" in latex
    assert r"$-$13.75 $\pm$ 15.88" in latex and "GAIN-FFN" in latex   # a minus sign


def test_every_table_is_defined_once_and_builds():
    assert set(build_tables([GOLDEN])) == set(TABLES)


def test_make_tables_script_writes_markdown_and_latex(tmp_path, script):
    script("make_tables", GOLDEN, "--out", tmp_path)
    for name in TABLES:
        assert (tmp_path / f"{name}.md").stat().st_size > 100
        assert (tmp_path / f"{name}.tex").read_text().startswith(r"\begin{table}")


def test_make_tables_script_names_an_unknown_table(script):
    with pytest.raises(SystemExit, match=r"unknown table\(s\) \['nope'\]"):
        script("make_tables", GOLDEN, "--tables", "nope")


def _assert_every_figure(folder, suffixes):
    stems = {p.stem for p in folder.iterdir()}
    for prefix in ("heatmap_", "tradeoff_", "per_token_histograms", "interpolation_",
                   "combination_", "downstream_"):
        assert any(s.startswith(prefix) for s in stems), f"no {prefix} figure in {sorted(stems)}"
    assert len([s for s in stems if s.startswith("heatmap_")]) == 5  # one per run
    for path in folder.iterdir():
        assert path.stat().st_size > 5000, path  # a drawn figure, not an empty canvas
    assert {p.suffix for p in folder.iterdir()} == suffixes


def test_make_figures_script_writes_every_figure(tmp_path, script):
    script("make_figures", GOLDEN, "--out", tmp_path, "--formats", "png")
    _assert_every_figure(tmp_path, {".png"})


@pytest.mark.slow
def test_make_figures_script_as_a_command_writes_pngs_and_pdfs(tmp_path):
    subprocess.run([sys.executable, "scripts/make_figures.py", str(GOLDEN), "--out", str(tmp_path)],
                   check=True, capture_output=True, cwd=SCRIPTS.parent)
    _assert_every_figure(tmp_path, {".png", ".pdf"})


def _without_budget(table):
    """The matched table of the golden runs, which record no budget (train.tokens_per_stage)."""
    assert table.index.to_frame()[["tokens/stage", "steps/stage"]].isna().all().all()
    return table.droplevel(["tokens/stage", "steps/stage"])


def test_matched_comparison_refuses_a_one_point_front(tables):
    (_, table), = tables["matched"]
    row = _without_budget(table).loc[("tiny", "gain_ffn", "lora", "vs base")]
    gain_a = -((100 * (8 / 10 - 1) + 100 * (16 / 19 - 1) + 100 * (30 / 36 - 1)) / 3
               + (100 * (7 / 10 - 1) + 100 * (18 / 19 - 1) + 100 * (32 / 36 - 1)) / 3) / 2
    # gain_ffn's front is one point (two seeds): the common range is that point, where the
    # front's own end lies, so nothing is read there (a resample would move it either way)
    assert row["at gain"] == pytest.approx(gain_a)
    assert np.isnan(row["A - B"]) and row["reading"].startswith(
        f"no comparison: A does not reach {gain_a:g}% (seed 0 spans")


def test_matched_comparison_at_a_chosen_gain_outside_a_front_is_no_comparison():
    (_, table), = build_tables([GOLDEN], ["matched"], matched_at=[10.0])["matched"]
    row = _without_budget(table).loc[("tiny", "gain_ffn", "lora", "vs base")]
    assert row["at gain"] == 10.0 and np.isnan(row["A - B"])  # gain_ffn's front is one point, ~16.5
    assert row["reading"].startswith("no comparison")

"""What the figures claim: downstream scores only where they were measured, every front point
named by its learning rate, and methods whose points coincide both visible."""

import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from gainbench.results.figures import downstream_per_stage, tradeoff_scatter
from gainbench.results.runs import label_variants, load_runs

pytest.importorskip("matplotlib")
GOLDEN = Path(__file__).parent / "golden" / "runs"


@pytest.fixture(scope="module")
def runs():
    return load_runs([GOLDEN])


def _drawn_lines(ax):
    """(x, y) of every line drawn with a visible line style (markers alone excluded)."""
    return [line.get_xydata() for line in ax.get_lines()
            if line.get_linestyle() not in ("None", "none", " ", "") and len(line.get_xdata()) > 1]


def test_downstream_marks_the_evaluated_stages_and_joins_none_across_a_gap(runs):
    (stem, fig), = downstream_per_stage(runs)
    ax, = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0 (base)", "3"]   # stages 1, 2 never ran it
    assert _drawn_lines(ax) == []                          # nothing drawn through stages 1, 2
    assert len(ax.collections) >= 2                        # the ± 1.96 stderr bars
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"GAIN-FFN", "LoRA (lr=0.0001)"}


def test_downstream_joins_consecutive_evaluated_stages(runs):
    run = next(r for r in runs if r.method == "gain_ffn")
    at_zero = run.rows[(run.rows["eval_kind"] == "lm_eval") & (run.rows["stage"] == 0)]
    rows = pd.concat([run.rows, at_zero.assign(stage=1, value=at_zero["value"] + 0.1)])
    (_, fig), = downstream_per_stage([replace(run, rows=rows)])
    ax, = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0 (base)", "1", "3"]
    (segment,) = _drawn_lines(ax)                          # 0 -> 1 only, not 1 -> 3
    assert segment[:, 0].tolist() == [0, 1] and segment[1, 1] - segment[0, 1] == pytest.approx(10)


def _annotations(ax):
    return [t.get_text() for t in ax.texts]


def test_every_front_point_is_labelled_with_its_learning_rate(runs):
    (_, fig), = tradeoff_scatter(runs)
    left = fig.axes[0]
    # lora's two points each at their own default-less lr; gain_ffn's one point at its lr
    assert sorted(_annotations(left)) == ["0.0001", "0.001", "0.003"]
    assert "numbers: learning rate" in fig._suptitle.get_text()


def test_a_sweep_from_one_default_is_labelled_by_multiples_of_it(runs):
    swept = []
    for run in runs:
        config = {**run.config, "method": {**run.config["method"], "lr": 1e-4}}
        swept.append(replace(run, meta={**run.meta, "config": config}))
    label_variants(swept)
    (_, fig), = tradeoff_scatter(swept)
    assert "×1" in _annotations(fig.axes[0]) and "×10" in _annotations(fig.axes[0])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "LoRA (× lr 0.0001)" in legend


def test_a_method_on_another_methods_points_stays_visible_and_says_so(runs):
    copies = [replace(r, meta={**r.meta, "run_id": r.run_id + "-ia3", "config": {
        **r.config, "method": {**r.config["method"], "name": "ia3"}}})
        for r in runs if r.method == "gain_ffn"]
    both = runs + copies
    label_variants(both)
    (_, fig), = tradeoff_scatter(both)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "(IA)³, on GAIN-FFN's points" in legend
    markers = {line.get_label(): (line.get_marker(), line.get_markerfacecolor(), line.get_zorder())
               for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")}
    star, ring = markers["GAIN-FFN"], markers["(IA)³, on GAIN-FFN's points"]
    assert star[0] == "*" and ring[0] != "*" and ring[1] == "none" and ring[2] > star[2]
    assert _annotations(fig.axes[0]).count("0.003") == 1   # one label for the shared point


def test_a_mixed_results_folder_is_drawn_one_results_folder_at_a_time(tmp_path):
    from gainbench.results.figures import make_figures

    for run in GOLDEN.iterdir():
        shutil.copytree(run, tmp_path / "results" / ("a" if "gain_ffn" in run.name else "b") / run.name)
    message = make_figures([tmp_path / "results"], tmp_path / "figures", ["tradeoff"], ("png",))
    assert message == f"wrote 2 files to 2 folders under {tmp_path / 'figures'}"
    assert sorted(p.relative_to(tmp_path / "figures").as_posix()
                  for p in (tmp_path / "figures").rglob("*.png")) == ["a/tradeoff_tiny.png",
                                                                      "b/tradeoff_tiny.png"]

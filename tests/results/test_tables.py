"""Tables come from run folders alone; missing cells are missing, never zero."""

import math

import numpy as np
import pytest

from gainbench.results.store import RunStore
from gainbench.results.tables import comparison_table

L = np.array([[2.0, 3.0], [1.5, 3.1], [1.7, 2.5]])  # (T+1, T) with T = 2


def _write_run(root, method, stages):
    store = RunStore(root / f"run-{method}")
    domains = ["d1", "d2"]
    meta = {"config": {"model": {"name": "m"}, "method": {"name": method}, "seed": 0,
                       "sequence": {"order": domains}},
            "trainable_params": 10, "stage_seconds": {}}
    for k in stages:
        rows = [dict(run_id="r", model="m", method=method, seed=0, sequence="s", stage=k,
                     stage_domain="base" if k == 0 else domains[k - 1], eval_kind="ppl",
                     eval_name=d, metric="nll", value=L[k, j], stderr=math.nan, n=100)
                for j, d in enumerate(domains)]
        meta["stage_seconds"][str(k)] = 1.0
        store.finish_stage(k, rows, meta)
        meta = store.meta()


def test_comparison_table_from_folders(tmp_path, script, capsys):
    _write_run(tmp_path, "gain", [0, 1, 2])
    _write_run(tmp_path, "lora", [0, 1])  # unfinished
    table = comparison_table([tmp_path]).set_index("method")
    assert table.loc["gain", "in-domain dPPL%"] == np.mean(
        [100 * np.expm1(1.5 - 2.0), 100 * np.expm1(2.5 - 3.1)])
    assert table.loc["gain", "BWT (nats)"] == 1.5 - 1.7
    assert table.loc["lora", "stages done"] == "1/2" and np.isnan(table.loc["lora", "BWT (nats)"])

    script("make_tables", tmp_path, "--tables", "runs")
    out = capsys.readouterr().out
    lora_line = next(line for line in out.splitlines() if "| LoRA" in line and "1/2" in line)
    assert "nan" not in lora_line and " - " in lora_line


def _write_downstream_run(root, name, headline_metrics=None, diagnostic=()):
    """A finished two-domain run with hellaswag (acc and acc_norm) at stages 0 and 2; its config
    stores ``headline_metrics`` when given (a run older than the setting does not)."""
    store = RunStore(root / name)
    domains = ["d1", "d2"]
    lm_eval = {"tasks": ["hellaswag"]}
    if headline_metrics is not None:
        lm_eval["headline_metrics"] = headline_metrics
    meta = {"config": {"model": {"name": "m"}, "method": {"name": name}, "seed": 0,
                       "sequence": {"order": domains}, "eval": {"lm_eval": lm_eval}},
            "trainable_params": 10, "stage_seconds": {}}
    scores = {0: {"acc": (0.30, 0.01), "acc_norm": (0.40, 0.02)},
              2: {"acc": (0.35, 0.01), "acc_norm": (0.38, 0.02)}}
    for k in range(3):
        rows = [dict(run_id=name, model="m", method=name, seed=0, sequence="s", stage=k,
                     stage_domain="base" if k == 0 else domains[k - 1], eval_kind="ppl",
                     eval_name=d, metric="nll", value=L[k, j], stderr=math.nan, n=100)
                for j, d in enumerate(domains)]
        for metric, (value, se) in scores.get(k, {}).items():
            rows.append(dict(rows[0], eval_kind="lm_eval", eval_name="hellaswag", metric=metric,
                             value=value, stderr=se, n=500))
        if k == 2:
            rows += [dict(rows[0], eval_kind="diagnostic", **d) for d in diagnostic]
        meta["stage_seconds"][str(k)] = 1.0
        store.finish_stage(k, rows, meta)
        meta = store.meta()


def test_downstream_table_reports_each_task_by_its_headline_metric(tmp_path):
    from gainbench.results.tables import build_tables

    _write_downstream_run(tmp_path, "old")                             # convention: acc_norm
    _write_downstream_run(tmp_path, "own", {"hellaswag": "acc"})       # its stored choice
    (model, table), = build_tables([tmp_path], ["downstream"])["downstream"]
    assert sorted(table.index) == ["hellaswag acc", "hellaswag acc_norm"]
    assert table.loc["hellaswag acc_norm", "old"] == pytest.approx(-2.0)
    assert table.loc["hellaswag acc_norm", "old ±"] == pytest.approx(1.96 * math.hypot(2, 2))
    assert np.isnan(table.loc["hellaswag acc_norm", "own"])           # not its headline
    assert table.loc["hellaswag acc", "own"] == pytest.approx(5.0)
    assert table.loc["hellaswag acc_norm", "base acc (%)"] == pytest.approx(40.0)
    assert table.loc["hellaswag acc_norm", "base acc (%) ±"] == pytest.approx(1.96 * 2)
    runs = build_tables([tmp_path], ["runs"])["runs"][0][1].set_index("method")
    assert runs.loc["old", "hellaswag acc_norm change (pts)"] == pytest.approx(-2.0)
    assert runs.loc["own", "hellaswag acc change (pts)"] == pytest.approx(5.0)


def test_headline_metric_convention_and_fallbacks():
    from gainbench.results.run_metrics import headline_metric, headline_metrics_of

    both = ["acc", "acc_norm"]
    for task in ("hellaswag", "arc_challenge", "openbookqa"):
        assert headline_metric(task, both) == "acc_norm"
    for task in ("arc_easy", "piqa", "boolq", "sciq", "gb_sciq_mini", "gb_cloze_embedded", "new_task"):
        assert headline_metric(task, both) == "acc"
    assert headline_metric("hellaswag", ["acc"]) == "acc"             # asked for but not reported
    assert headline_metric("wikitext", ["bits_per_byte", "word_perplexity"]) == "bits_per_byte"
    assert headline_metric("t", []) is None
    assert headline_metrics_of({"eval": {"lm_eval": {"headline_metrics": {"t": "f1"}}}}) == {"t": "f1"}
    assert headline_metrics_of({"eval": {"lm_eval": {}}})["hellaswag"] == "acc_norm"


def test_diagnostic_table_per_role_and_the_empty_table_note(tmp_path):
    from gainbench.results.render import render
    from gainbench.results.tables import build_tables

    _write_downstream_run(tmp_path, "plain")
    assert build_tables([tmp_path], ["diagnostic"])["diagnostic"] == []
    assert "no run recorded the column-span diagnostic" in render("diagnostic", [], "md")
    assert render("diagnostic", [], "latex").startswith(r"\begin{table}")

    diagnostic = [dict(eval_name=f"model.layers.{i}.mlp.down_proj", metric=metric, value=value, n=n)
                  for i in (0, 1)
                  for metric, value, n in (("span_residual_column", 0.0, 64),
                                           ("span_residual_row", 0.0, 64),
                                           ("intruder_dims", 0.0, 16), ("update_rel_norm", 0.02, 64),
                                           ("span_residual_column_random", 0.0, 64),
                                           ("span_residual_row_random", 0.5, 128))]
    _write_downstream_run(tmp_path, "gain_ffn", diagnostic=diagnostic)
    (model, table), = build_tables([tmp_path], ["diagnostic"])["diagnostic"]
    line = table.loc[("gain_ffn", "down")]
    assert line["shape [out, in]"] == "64 x 128" and line["changed"] == 2 and line["rank r"] == 64
    assert line["update size (%)"] == pytest.approx(2.0)
    assert line["random row"] == 0.5 and line["outside row(W)"] == 0.0
    md = render("diagnostic", [(model, table)], "md")
    assert "| GAIN-FFN | down   |" in md and "64 x 128" in md

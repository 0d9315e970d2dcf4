"""The end-of-run summary: downstream by each task's headline metric with lm-eval's stderr, and the
column-span diagnostic per matrix role beside its random-direction baseline."""

import math

import pandas as pd

from gainbench.results.summary import summary_text

DOMAINS = ["d1", "d2"]


def _row(stage, kind, name, metric, value, stderr=math.nan, n=100):
    return dict(run_id="r", model="m", method="lora", seed=0, sequence="s", stage=stage,
                stage_domain="base" if stage == 0 else DOMAINS[stage - 1], eval_kind=kind,
                eval_name=name, metric=metric, value=value, stderr=stderr, n=n)


def _rows():
    rows = [_row(k, "ppl", d, "nll", 2.0 - 0.1 * k) for k in range(3) for d in DOMAINS]
    for k, (acc, norm) in ((0, (0.30, 0.40)), (2, (0.35, 0.38))):
        rows += [_row(k, "lm_eval", "hellaswag", "acc", acc, 0.01, 500),
                 _row(k, "lm_eval", "hellaswag", "acc_norm", norm, 0.02, 500),
                 _row(k, "lm_eval", "gb_boolq_mini", "acc", 0.5, 0.05, 82)]
    # v_proj [192, 576] of rank 192 (two layers) and an unchanged q_proj
    for layer in (0, 1):
        name = f"model.layers.{layer}.self_attn.v_proj"
        for metric, value, n in (("span_residual_column", 0.0, 192), ("span_residual_row", 0.68, 192),
                                 ("intruder_dims", float(layer), 16), ("update_rel_norm", 1e-3, 192),
                                 ("span_residual_column_random", 0.0, 192),
                                 ("span_residual_row_random", 384 / 576, 576)):
            rows.append(_row(2, "diagnostic", name, metric, value, n=n))
        for metric, value in (("span_residual_column", 0.0), ("span_residual_row", 0.0),
                              ("intruder_dims", 0.0), ("update_rel_norm", 0.0)):
            rows.append(_row(2, "diagnostic", f"model.layers.{layer}.self_attn.q_proj", metric, value))
    return pd.DataFrame(rows)


def _block(text, heading):
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def test_downstream_lines_use_the_headline_metric_with_its_stderr():
    block = _block(summary_text(_rows(), DOMAINS), "Downstream (lm-eval)")
    assert "standard error over the task's items" in block[0]
    hellaswag = next(line for line in block if line.startswith("hellaswag"))
    # acc_norm by convention: 40 ± 2 -> 38 ± 2, change -2 ± sqrt(2^2 + 2^2)
    assert hellaswag.split() == ["hellaswag", "acc_norm", "500", "40.00", "±", "2.00", "38.00",
                                 "±", "2.00", "-2.00", "±", "2.83"]
    boolq = next(line for line in block if line.startswith("gb_boolq_mini"))
    assert boolq.split()[:3] == ["gb_boolq_mini", "acc", "82"] and "+0.00 ± 7.07" in boolq
    # a run's own table (its stored eval.lm_eval.headline_metrics) wins over the convention
    own = _block(summary_text(_rows(), DOMAINS, {"hellaswag": "acc"}), "Downstream (lm-eval)")
    assert next(line for line in own if line.startswith("hellaswag")).split()[:4] == [
        "hellaswag", "acc", "500", "30.00"]


def test_diagnostic_lines_per_role_beside_the_random_baseline():
    block = _block(summary_text(_rows(), DOMAINS), "Column-span diagnostic")
    assert "over the 2 matrices that changed (2 measured did not)" in block[0]
    assert any("(m-r)/m and (n-r)/n" in line for line in block)
    v = next(line for line in block if line.startswith("v "))
    # matrices, shape, rank, size, outside col, random col, outside row, random row, intruders, k
    assert v.split() == ["v", "2", "192", "x", "576", "192", "1.00e-03", "0.000", "0.000", "0.680",
                         "0.667", "1", "16"]
    assert not any(line.startswith("q ") for line in block)   # q did not change


def test_no_diagnostic_and_no_downstream():
    rows = _rows()
    text = summary_text(rows[rows["eval_kind"] == "ppl"], DOMAINS)
    assert "Column-span" not in text and "Downstream" not in text

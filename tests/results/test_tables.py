"""Tables come from run folders alone; missing cells are missing, never zero."""

import math

import numpy as np

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
    lora_line = next(line for line in out.splitlines() if "| lora" in line and "1/2" in line)
    assert "nan" not in lora_line and " - " in lora_line

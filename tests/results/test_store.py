"""A stage is done only when its rows and its mark are both on disk."""

import math

import pandas as pd
import torch

from gainbench.results.store import ROW_COLUMNS, RunStore


def _rows(stage, n=2):
    return [dict(run_id="r", model="m", method="x", seed=0, sequence="s", stage=stage,
                 stage_domain="d", eval_kind="ppl", eval_name=f"d{i}", metric="nll",
                 value=float(stage + i), stderr=math.nan, n=10) for i in range(n)]


def test_finish_stage_writes_rows_then_marks(tmp_path):
    store = RunStore(tmp_path / "run")
    assert not store.exists() and store.rows().empty
    store.finish_stage(0, _rows(0), {"run_id": "r"})
    store.finish_stage(1, _rows(1), store.meta())
    assert store.finished_stages() == [0, 1]
    rows = store.rows()
    assert list(rows.columns) == ROW_COLUMNS and len(rows) == 4
    assert not list((tmp_path / "run").glob(".*tmp"))  # no temp files left behind


def test_rows_of_an_unmarked_stage_are_ignored_and_replaced(tmp_path):
    store = RunStore(tmp_path / "run")
    store.finish_stage(0, _rows(0), {})
    # a job killed after writing stage 1's rows but before marking it done
    stale = pd.concat([store.rows(), pd.DataFrame(_rows(1, n=5))], ignore_index=True)
    stale.to_parquet(store.rows_path, index=False)
    assert len(store.rows()) == 2
    store.finish_stage(1, _rows(1), store.meta())
    assert len(pd.read_parquet(store.rows_path)) == 4


def test_stage_state_round_trip_and_pruning(tmp_path):
    store = RunStore(tmp_path / "run")
    state = {"a.scale": torch.arange(3.0)}
    store.save_stage_state(1, state)
    store.save_stage_state(2, state, keep_only_latest=True)
    assert not store.stage_state_path(1).exists()
    assert torch.equal(store.load_stage_state(2)["a.scale"], state["a.scale"])

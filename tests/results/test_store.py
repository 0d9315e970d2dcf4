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


def test_a_corrupted_or_foreign_run_json_is_refused_not_overwritten(tmp_path):
    import json

    import pytest

    from gainbench.errors import GainbenchError

    store = RunStore(tmp_path / "run-a")
    store.run_dir.mkdir()
    store.meta_path.write_text('{"run_id": "run-a", "finished_st')  # a truncated file
    with pytest.raises(GainbenchError, match="not a readable run.json.*move .* away"):
        store.check("run-a")
    store.meta_path.write_text(json.dumps({"run_id": "run-b", "finished_stages": [0]}))
    with pytest.raises(GainbenchError, match="belongs to run 'run-b', not 'run-a'"):
        store.check("run-a")
    store.meta_path.write_text(json.dumps({"run_id": "run-a", "finished_stages": [0]}))
    store.rows_path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(GainbenchError, match="rows.parquet cannot be read"):
        store.check("run-a")


def test_a_second_job_on_the_same_run_folder_fails_at_once(tmp_path):
    import pytest

    from gainbench.errors import GainbenchError

    store = RunStore(tmp_path / "run-a")
    with store.lock():
        with pytest.raises(GainbenchError, match=r"being written by another job \(pid \d+ on "):
            with RunStore(tmp_path / "run-a").lock():
                pass
    with RunStore(tmp_path / "run-a").lock():  # released: the next job may go on
        pass

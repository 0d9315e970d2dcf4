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


def test_rows_parquet_has_one_fixed_typed_column_set_and_a_schema_version(tmp_path):
    import json

    import pyarrow.parquet as pq

    from gainbench.results.store import (META_KEY, ROW_SCHEMA, ROWS_SCHEMA_KEY,
                                         ROWS_SCHEMA_VERSION, rows_schema)

    store = RunStore(tmp_path / "run")
    store.finish_stage(0, _rows(0), {"run_id": "r"})  # no grid, document or run columns at all
    schema = pq.read_schema(store.rows_path)
    assert schema.remove_metadata().equals(ROW_SCHEMA)  # names, order and types
    assert schema.metadata[ROWS_SCHEMA_KEY] == str(ROWS_SCHEMA_VERSION).encode()
    assert json.loads(schema.metadata[META_KEY])["rows_schema"] == ROWS_SCHEMA_VERSION
    assert rows_schema(store.meta()) == ROWS_SCHEMA_VERSION == 2
    assert json.loads(store.meta_path.read_text())["rows_schema"] == 2
    assert list(pd.read_csv(store.run_dir / "rows.csv").columns) == ROW_COLUMNS
    assert rows_schema({}) == 1  # a folder from before the version was recorded


def test_a_row_key_outside_the_schema_is_refused_not_dropped(tmp_path):
    import pytest

    store = RunStore(tmp_path / "run")
    with pytest.raises(ValueError, match=r"\['learning_rate'\] are not in rows schema"):
        store.finish_stage(0, [dict(_rows(0)[0], learning_rate=1e-3)], {"run_id": "r"})
    assert not store.rows_path.exists()


def test_resuming_a_folder_of_the_older_rows_schema_writes_the_fixed_set(tmp_path):
    import json

    store = RunStore(tmp_path / "run")
    store.run_dir.mkdir()
    old = pd.DataFrame(_rows(0))   # rows schema 1: 13 columns, no version
    old.to_parquet(store.rows_path, index=False)
    store.meta_path.write_text(json.dumps({"run_id": "r", "finished_stages": [0]}))
    assert list(store.rows().columns) == list(old.columns)  # read as it is
    run_columns = dict(lr=1e-3, tokens_per_stage=1024, method_options='{"rank": 4}')
    store.finish_stage(1, [dict(r, **run_columns) for r in _rows(1)], store.meta())
    rows = store.rows()
    assert list(rows.columns) == ROW_COLUMNS and len(rows) == 4
    # what is the same on every row of a run is filled in for the older stage's rows too
    assert (rows.lr == 1e-3).all() and (rows.tokens_per_stage == 1024).all()
    assert set(rows.method_options) == {'{"rank": 4}'} and rows.document.isna().all()

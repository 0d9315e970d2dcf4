"""Nothing is lost silently: rows that do not cover a finished stage are refused everywhere, and
no reader ever sees rows of a stage that is not finished."""

import json
import math

import pandas as pd
import pyarrow.parquet as pq
import pytest

from gainbench import protocol
from gainbench.errors import GainbenchError
from gainbench.results import store as store_module
from gainbench.results.runs import load_run
from gainbench.results.store import META_KEY, RunStore
from tests.conftest import compose_config


def _rows(stage, n=2):
    return [dict(run_id="r", model="m", method="x", seed=0, sequence="s", stage=stage,
                 stage_domain="d", eval_kind="ppl", eval_name=f"d{i}", metric="nll",
                 value=float(stage + i), stderr=math.nan, n=10) for i in range(n)]


def _two_stages(tmp_path) -> RunStore:
    store = RunStore(tmp_path / "run")
    store.finish_stage(0, _rows(0), {"run_id": "r"})
    store.finish_stage(1, _rows(1), store.meta())
    return store


def test_deleted_rows_are_refused_by_the_store_and_the_tables(tmp_path):
    store = _two_stages(tmp_path)
    store.rows_path.unlink()
    with pytest.raises(GainbenchError, match=r"rows.parquet cannot be read .*finished stages \[0, 1\].*move"):
        store.check("r")
    with pytest.raises(GainbenchError, match="cannot be read"):
        load_run(store.run_dir)


def test_rows_missing_a_finished_stage_are_refused(tmp_path):
    store = _two_stages(tmp_path)
    pd.DataFrame(_rows(1)).to_parquet(store.rows_path, index=False)  # stage 0's rows gone
    with pytest.raises(GainbenchError, match=r"no rows of finished stage\(s\) \[0\]"):
        store.check("r")
    with pytest.raises(GainbenchError, match=r"no rows of finished stage\(s\) \[0\]"):
        load_run(store.run_dir)


def test_rows_are_written_with_the_record_that_lists_their_stages(tmp_path):
    store = _two_stages(tmp_path)
    record = json.loads(pq.read_schema(store.rows_path).metadata[META_KEY])
    # a plain pandas reader sees exactly the stages the record calls finished
    assert sorted(pd.read_parquet(store.rows_path)["stage"].unique()) == record["finished_stages"] == [0, 1]


def test_a_kill_between_the_rows_and_run_json_loses_nothing(tmp_path, monkeypatch):
    store = _two_stages(tmp_path)

    def killed(path, data):
        raise KeyboardInterrupt  # as a SIGKILL right after the rows' rename
    monkeypatch.setattr(store_module, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        store.finish_stage(2, _rows(2), store.meta())
    monkeypatch.undo()
    assert json.loads(store.meta_path.read_text())["finished_stages"] == [0, 1]  # run.json lags
    assert store.finished_stages() == [0, 1, 2] and len(store.rows()) == 6       # nothing lost
    store.repair_record()
    assert json.loads(store.meta_path.read_text())["finished_stages"] == [0, 1, 2]
    assert load_run(store.run_dir).meta["finished_stages"] == [0, 1, 2]


@pytest.mark.slow  # the store refuses them on its own: test_deleted_rows_are_refused_by_the_store_and_the_tables
@pytest.mark.parametrize("finished", [False, True])
def test_the_protocol_refuses_a_run_whose_rows_were_deleted(tmp_path, finished):
    overrides = ["experiment=smoke", "sequence.order=[kjv_bible]", "eval.lm_eval.stages=none",
                 "eval.diagnostics.stages=none", f"results_dir={tmp_path}"]
    if not finished:
        overrides.append("sequence.order=[kjv_bible,icd10_medical]")
    run_dir = protocol.run(compose_config(overrides))
    if not finished:  # as a job killed after stage 1: stage 2 is still to run
        meta = json.loads((run_dir / "run.json").read_text())
        rows = pd.read_parquet(run_dir / "rows.parquet")
        meta["finished_stages"] = [0, 1]
        (run_dir / "run.json").write_text(json.dumps(meta))
        rows[rows.stage < 2].to_parquet(run_dir / "rows.parquet", index=False)
    (run_dir / "rows.parquet").unlink()
    with pytest.raises(GainbenchError, match="rows.parquet cannot be read"):
        protocol.run(compose_config(overrides))

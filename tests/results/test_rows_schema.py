"""Run folders of every rows schema read together: the committed ones (schema 1, 13 to 17
columns, no version) and those written now (schema 2, ROW_SCHEMA), and the extra columns of
schema 2 change no table."""

import json
import math
import shutil
from pathlib import Path

import pandas as pd

from gainbench.results.runs import load_runs
from gainbench.results.store import ROW_COLUMNS, RunStore, read_finished_rows, read_record
from gainbench.results.tables import build_tables

GOLDEN = Path(__file__).parent / "golden" / "runs"


def _rewrite_in_schema_2(source: Path, target: Path) -> None:
    """``source``'s stages written again through RunStore, as a run of today writes them."""
    meta = read_record(source)
    rows = read_finished_rows(source, meta)
    config = meta["config"]
    run_columns = dict(lr=config["train"]["lr"], tokens_per_stage=1024,
                       method_options=json.dumps(config["method"].get("options", {}), sort_keys=True))
    store = RunStore(target)
    record = {k: v for k, v in meta.items() if k != "finished_stages"}
    for stage in meta["finished_stages"]:
        stage_rows = [{k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
                      for row in rows[rows.stage == stage].to_dict("records")]
        store.finish_stage(stage, [dict(row, **run_columns) for row in stage_rows],
                           store.meta() or record)


def test_old_and_new_run_folders_load_together_and_give_the_same_tables(tmp_path):
    old_root, mixed_root = tmp_path / "old", tmp_path / "mixed"
    shutil.copytree(GOLDEN, old_root)
    shutil.copytree(GOLDEN, mixed_root)
    rewritten = sorted(p.name for p in GOLDEN.iterdir())[::2]   # every other run, schema 2
    for name in rewritten:
        shutil.rmtree(mixed_root / name)
        _rewrite_in_schema_2(GOLDEN / name, mixed_root / name)

    runs = {r.path.name: r for r in load_runs([mixed_root])}
    assert all(list(runs[name].rows.columns) == ROW_COLUMNS for name in rewritten)
    assert all(runs[name].meta["rows_schema"] == 2 for name in rewritten)
    old = [name for name in runs if name not in rewritten]
    assert old and all("lr" not in runs[name].rows for name in old)   # read as they are
    assert all("rows_schema" not in runs[name].meta for name in old)

    before, after = build_tables([old_root]), build_tables([mixed_root])
    assert before.keys() == after.keys()
    for name in before:
        for (caption_a, table_a), (caption_b, table_b) in zip(before[name], after[name]):
            assert caption_a == caption_b
            pd.testing.assert_frame_equal(table_a, table_b)

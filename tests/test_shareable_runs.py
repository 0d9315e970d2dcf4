"""A run as colleagues and wandb see it, end to end on the tiny model: files readable under the
usual umask, rows.parquet's fixed column set with what trained the run on every row, and a wandb
run (fake module) that a kill and resume continue."""

import json
import os
import shutil
import stat
import sys

import pyarrow.parquet as pq
import pytest

from gainbench import files
from gainbench.results.store import ROW_SCHEMA, ROWS_SCHEMA_KEY
from gainbench.results.tables import build_tables
from gainbench.settings import settings_from_config
from tests.conftest import compose_config
from tests.results.fake_wandb import fake_wandb
from tests.results.test_rows_schema import GOLDEN
from tests.test_protocol import SHORT, _kill_then_resume

pytestmark = pytest.mark.slow


@pytest.fixture
def umask_022():
    files.umask.cache_clear()
    previous = os.umask(0o022)
    yield
    os.umask(previous)
    files.umask.cache_clear()


def test_a_killed_and_resumed_run_is_shareable_and_one_wandb_run(tmp_path, monkeypatch, capsys,
                                                                 umask_022):
    wandb = fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    cfg = compose_config(["experiment=smoke", SHORT, "method=lora", "eval.lm_eval.stages=[0,3]",
                          "logger=wandb", "logger.progress_seconds=1e-9",
                          f"results_dir={tmp_path / 'results'}"])
    settings = settings_from_config(cfg)
    finished, run_dir = _kill_then_resume(monkeypatch, cfg, die_at_stage=2)
    assert finished == [0, 1]

    # --- files: readable by the group and others, as the umask allows
    written = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {p.relative_to(run_dir).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in written} == {
        p.relative_to(run_dir).as_posix(): 0o644 for p in written}

    # --- rows: one fixed, typed column set, its version, and what trained the run on every row
    schema = pq.read_schema(run_dir / "rows.parquet")
    assert schema.remove_metadata().equals(ROW_SCHEMA) and schema.metadata[ROWS_SCHEMA_KEY] == b"2"
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["rows_schema"] == 2 and isinstance(meta["trainable_params"], int)
    rows = pq.read_table(run_dir / "rows.parquet").to_pandas()
    assert (rows.lr == settings.train.lr).all() and (rows.tokens_per_stage == 1024).all()
    assert [json.loads(o) for o in rows.method_options.unique()] == [settings.method_options]
    assert settings.method_options["r"] == 8
    trainable = rows[(rows.eval_kind == "train") & (rows.metric == "trainable_params")]
    assert set(trainable.value) == {float(meta["trainable_params"])}   # exact as a float

    # --- wandb: one run id, resumed; steps count on across the kill; the end is summarised
    first, second = wandb.runs
    assert first.init["id"] == second.init["id"] == settings.run_id
    assert second.init["resume"] == "allow" and second.init["config"] == settings.resolved_config
    steps = [e["train_step/global_step"] for run in (first, second) for e in run.logged
             if "train_step/global_step" in e]
    assert steps == list(range(1, 3 * 4 + 1))   # 3 stages of 4 steps (1024 tokens / 4 x 64)
    assert meta["train_steps"] == {"1": 4, "2": 4, "3": 4}
    stages = [[e["stage"] for e in run.logged if "stage" in e] for run in (first, second)]
    assert stages == [[0, 1], [2, 3]]
    assert not first.finished and second.finished
    assert {"summary/bwt_nats", "summary/forgetting_nats"} <= set(second.summary)
    (artifact,) = second.artifacts
    assert len(artifact.objects["rows"].dataframe) == len(rows)

    # --- no terminal under pytest: a periodic progress line per step
    err = capsys.readouterr().err
    assert "gainbench: stage 3/3 train python_code: step 4/4 loss " in err

    # --- tables read this run beside folders of the older rows schema
    (tmp_path / "mixed").mkdir()
    for source in (run_dir, *GOLDEN.iterdir()):
        shutil.copytree(source, tmp_path / "mixed" / source.name)
    assert build_tables([tmp_path / "mixed"])

"""wandb mirrors a run as people use it (config, group, tags, per-step and per-stage curves, summary
metrics, the rows as an artifact), offline by default, and is never fatal.

Most tests inject a fake ``wandb`` module that records the calls (tests/results/fake_wandb.py);
the last ones run wandb itself, offline, and read what it wrote."""

import math
import shutil
import sys
import warnings
from pathlib import Path

import pytest

from gainbench.results.run_metrics import RUN_METRICS, run_metrics
from gainbench.results.runs import load_run
from gainbench.results.wandb_mirror import WandbMirror, metric_key, variant_group
from gainbench.settings import settings_from_config
from gainbench.training.loop import TrainStep
from tests.conftest import compose_config
from tests.results.fake_wandb import fake_wandb

ROW = dict(eval_kind="ppl", eval_name="kjv_bible", metric="nll", value=2.5)
GOLDEN = Path(__file__).parent / "golden" / "runs"
WANDB = {"name": "wandb", "mode": "offline"}


@pytest.fixture
def wandb(monkeypatch):
    module = fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def _settings(*overrides):
    return settings_from_config(compose_config(["experiment=smoke", "logger=wandb", *overrides]))


def test_off_unless_asked(tmp_path, wandb):
    mirror = WandbMirror({"name": "none"}, "run", tmp_path / "run")
    mirror.log_step(TrainStep(1, 1, 2.0, 1e-3, 8))
    mirror.log_stage(0, [ROW])
    mirror.finish(tmp_path / "run")
    assert mirror.run is None and not wandb.runs and not (tmp_path / "run").exists()


def test_init_gets_the_resolved_config_a_group_per_variant_and_tags(tmp_path, wandb):
    settings = _settings("method=lora")
    WandbMirror.for_run(settings, tmp_path)
    (run,) = wandb.runs
    init = run.init
    assert init["config"] == settings.resolved_config   # filterable by method, lr, seed, ...
    assert init["config"]["train"]["lr"] == settings.train.lr
    assert init["tags"] == ["tiny-llama", "lora", "embedded8"]
    assert init["group"] == variant_group(settings.config)
    assert init["group"].startswith("tiny-llama-lora-embedded8-") and "seed" not in init["group"]
    # the run id is wandb's id, resumed when it exists; offline: no API key needed
    assert init["id"] == settings.run_id and init["resume"] == "allow" and init["mode"] == "offline"


def test_a_group_holds_the_seeds_of_one_variant_and_nothing_else():
    def group(*overrides):
        return variant_group(_settings(*overrides).config)

    assert group("seed=0") == group("seed=3")
    # where and how a run computes or shows its numbers is not a new variant either
    assert group() == group("results_dir=/elsewhere", "logger.project=mine", "device=cpu")
    assert len({group(), group("train.lr=1e-3"), group("method=lora"),
                group("train.tokens_per_stage=2048"), group("method.options.absorb_each_stage=false")}) == 5


def test_steps_count_across_stages_and_from_the_finished_ones_on_resume(tmp_path, wandb):
    mirror = WandbMirror(WANDB, "run", tmp_path)
    mirror.log_stage(0, [ROW])
    for stage, steps in ((1, 3), (2, 2)):
        for step in range(1, steps + 1):
            mirror.log_step(TrainStep(step, steps, loss=2.0 / step, lr=1e-3 * step, tokens=8))
        mirror.log_stage(stage, [ROW], steps=steps)
    resumed = WandbMirror(WANDB, "run", tmp_path, steps_done=5)   # after stages 1 and 2
    resumed.log_step(TrainStep(1, 4, 1.0, 1e-3, 8))

    first, second = wandb.runs
    steps = [entry["train_step/global_step"] for run in wandb.runs for entry in run.logged
             if "train_step/global_step" in entry]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert [e["train_step/lr"] for e in first.logged if "train_step/lr" in e] == [
        1e-3, 2e-3, 3e-3, 1e-3, 2e-3]
    assert [e["stage"] for e in first.logged if "stage" in e] == [0, 1, 2]
    # two x-axes: steps for the training curve, stages for the measurements
    assert first.metrics["train_step/*"] == "train_step/global_step"
    assert first.metrics["ppl/*"] == "stage"


def test_per_document_and_analysis_grid_rows_stay_out_of_the_stage_curves(tmp_path, wandb):
    mirror = WandbMirror(WANDB, "run", tmp_path)
    rows = [ROW, dict(ROW, metric="ppl", value=12.2, document=None, alpha=math.nan),
            dict(ROW, eval_kind="ppl_doc", metric="nll_sum", document="doc-1"),
            dict(ROW, eval_kind="interpolation", alpha=0.5),
            dict(ROW, eval_kind="combination", a=0.0, b=1.0)]
    mirror.log_stage(2, rows)
    assert wandb.runs[0].logged == [{"stage": 2, "ppl/kjv_bible/nll": 2.5,
                                     "ppl/kjv_bible/ppl": 12.2}]


def test_the_end_writes_the_run_metrics_and_the_rows_artifact(tmp_path, wandb):
    run_dir = shutil.copytree(GOLDEN / "tiny-gain_ffn-golden3-seed0-lr0.003", tmp_path / "run")
    mirror = WandbMirror(WANDB, "run", tmp_path)
    mirror.finish(run_dir)
    (run,) = wandb.runs
    expected = run_metrics(load_run(run_dir))
    assert set(RUN_METRICS) == set(expected) and not any(math.isnan(v) for v in expected.values())
    assert run.summary == {**{metric_key(k): v for k, v in expected.items()},
                           "summary/trainable_params": 100}
    assert {"summary/bwt_nats", "summary/fwt_nats", "summary/forgetting_nats",
            "summary/in_domain_dppl", "summary/earlier_dppl_vs_base"} <= set(run.summary)
    assert isinstance(run.summary["summary/trainable_params"], int)
    (artifact,) = run.artifacts
    assert artifact.name == "rows-tiny-gain_ffn-golden3-seed0-lr0.003" and artifact.type == "run-results"
    assert set(artifact.files) == {"rows.parquet", "rows.csv", "run.json"} - (
        set() if (run_dir / "rows.csv").exists() else {"rows.csv"})
    table = artifact.objects["rows"].dataframe
    assert len(table) == len(load_run(run_dir).rows)
    assert not any(isinstance(v, float) and math.isnan(v) for v in table.values.ravel())  # None
    assert run.finished and mirror.run is None


def test_a_failing_wandb_call_is_one_warning_and_the_run_goes_on(tmp_path, wandb):
    mirror = WandbMirror(WANDB, "run", tmp_path)

    def broken(data, step=None):
        raise ConnectionError("network down")
    mirror.run.log = broken
    with pytest.warns(UserWarning, match="wandb step log failed: network down") as caught:
        for step in range(1, 4):
            mirror.log_step(TrainStep(step, 3, 1.0, 1e-3, 8))
    assert len(caught) == 1
    with pytest.warns(UserWarning, match="wandb log failed"):
        mirror.log_stage(1, [ROW], steps=3)
    mirror.finish()


def test_init_failure_disables_the_mirror_with_a_warning(tmp_path, wandb):
    def init(**kwargs):
        raise RuntimeError("api_key not configured (no-tty)")
    wandb.init = init
    with pytest.warns(UserWarning, match="wandb disabled: api_key not configured"):
        mirror = WandbMirror(WANDB, "run", tmp_path)
    mirror.log_step(TrainStep(1, 1, 1.0, 1e-3, 8))   # no-ops, not crashes
    mirror.log_stage(0, [ROW])
    mirror.finish(tmp_path)


# --- wandb itself, offline --------------------------------------------------------------------

@pytest.fixture
def real_wandb(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    # wandb keeps the settings (WANDB_* variables) of the first session in this process: one an
    # earlier test began (seen with tests/results run after test_schema and the documented
    # commands) would make it ignore the ones set here and write into the working directory
    wandb.teardown()
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)   # conftest's "disabled" would log nothing
    for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb-home"))
    (tmp_path / "wandb-home").mkdir()
    return tmp_path / "wandb-home"


def test_offline_mode_needs_no_api_key_and_writes_what_was_mirrored(tmp_path, real_wandb):
    run_dir = shutil.copytree(GOLDEN / "tiny-gain_ffn-golden3-seed0-lr0.003", tmp_path / "run")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="wandb")   # every call must succeed
        mirror = WandbMirror(WANDB, "run-offline", run_dir, config={"train": {"lr": 3e-3}},
                             group="tiny-gain_ffn-golden3-0123abcd", tags=["tiny", "gain_ffn"])
        assert mirror.run is not None and mirror.run.id == "run-offline"
        mirror.log_step(TrainStep(1, 1, 2.0, 3e-3, 8))
        mirror.log_stage(1, [ROW], steps=1)
        mirror.finish(run_dir)
    import wandb

    wandb.teardown()   # wandb's service writes the run's file; this waits for it to end
    (offline,) = real_wandb.glob("wandb/offline-run-*-run-offline")
    # the run's records (protobuf): its group, tags, curves, summary keys and artifact by name
    records = (offline / "run-run-offline.wandb").read_bytes()
    for written in ("tiny-gain_ffn-golden3-0123abcd", "gain_ffn", "train_step/global_step",
                    "train_step/lr", "ppl/kjv_bible/nll", "summary/bwt_nats",
                    "rows-tiny-gain_ffn-golden3-seed0-lr0.003", "run-results"):
        assert written.encode() in records, written


def test_online_without_a_key_warns_and_carries_on(tmp_path, real_wandb, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials
    with pytest.warns(UserWarning, match="wandb disabled"):
        mirror = WandbMirror({"name": "wandb", "mode": "online"}, "run-online", tmp_path)
    mirror.log_stage(0, [ROW])  # a no-op, not a crash
    mirror.finish()

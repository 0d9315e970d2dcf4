"""The protocol end to end on the tiny model: the smoke preset, resume after a kill, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import gainbench.protocol as protocol
from gainbench.errors import GainbenchError
from gainbench.protocol import run
from tests.conftest import compose_config, subprocess_env

pytestmark = pytest.mark.slow

DOMAINS = ["wiki_history", "kjv_bible", "icd10_medical", "python_code", "wiki_biology",
           "python_docs", "wiki_french", "wiki_technology"]
SHORT = "sequence.order=[kjv_bible,icd10_medical,python_code]"


def test_smoke_preset_runs_the_whole_protocol(tmp_path, capsys):
    run_dir = run(compose_config(["experiment=smoke", f"results_dir={tmp_path}"]))
    rows = pd.read_parquet(run_dir / "rows.parquet")
    meta = json.loads((run_dir / "run.json").read_text())

    assert meta["finished_stages"] == list(range(9))
    ppl = rows[rows.eval_kind == "ppl"]
    # every domain after every stage, three metrics each
    assert len(ppl) == 9 * 8 * 3
    assert set(ppl.groupby("stage").eval_name.nunique()) == {8}
    assert set(ppl.metric) == {"nll", "ppl", "bpb"} and (ppl.value > 0).all()
    assert list(rows[rows.stage > 0].drop_duplicates("stage").stage_domain) == DOMAINS
    downstream = rows[rows.eval_kind == "lm_eval"]
    assert sorted(downstream.stage.unique()) == list(range(9))
    assert set(downstream.eval_name) == {"gb_boolq_mini", "gb_sciq_mini"}
    assert downstream.value.between(0, 1).all() and (downstream.n == 16).all()
    diagnostic = rows[rows.eval_kind == "diagnostic"]
    assert set(diagnostic.stage) == {8}  # cumulative update vs base, after the last stage
    assert set(diagnostic.metric) == {"span_residual_column", "span_residual_row", "intruder_dims",
                                      "update_rel_norm", "span_residual_column_random",
                                      "span_residual_row_random"}
    assert diagnostic.eval_name.nunique() == 2 * 7  # 2 layers x 7 linear modules of a Llama block
    # output-side GAIN keeps each wrapped matrix's row span (gainbench.evaluation.analysis.column_span)
    touched = diagnostic[diagnostic.eval_name.str.contains("o_proj|down_proj")]
    assert (touched[touched.metric == "span_residual_row"].value < 1e-6).all()
    assert (touched[touched.metric == "update_rel_norm"].value > 0).all()
    untouched = diagnostic[~diagnostic.eval_name.str.contains("o_proj|down_proj")]
    assert (untouched[untouched.metric == "update_rel_norm"].value == 0).all()
    trainable = rows[(rows.eval_kind == "train") & (rows.metric == "trainable_params")]
    assert set(trainable.value) == {2 * 2 * 64} == {meta["trainable_params"]}  # gain_ffn: 2 layers x 2 x 64

    # provenance
    assert meta["config"]["model"]["name"] == "tiny-llama"
    assert meta["versions"]["torch"] and meta["versions"]["lm_eval"]
    assert meta["lm_eval"]["task_versions"]["gb_boolq_mini"] is not None
    assert set(meta["domains"]) == set(DOMAINS)
    assert all(d["val_fingerprint"] for d in meta["domains"].values())
    assert set(meta["stage_seconds"]) == {str(s) for s in range(9)}

    out = capsys.readouterr().out
    assert "Validation perplexity" in out and "BWT" in out

    # a finished run says so and changes nothing
    before = (run_dir / "rows.parquet").read_bytes()
    run(compose_config(["experiment=smoke", f"results_dir={tmp_path}"]))
    assert "already finished" in capsys.readouterr().out
    assert (run_dir / "rows.parquet").read_bytes() == before


class Killed(BaseException):
    """Stands in for SIGKILL/preemption: not an Exception, so nothing catches it."""


def _kill_then_resume(monkeypatch, cfg, die_at_stage: int):
    """Run ``cfg`` until stage ``die_at_stage``'s training (killed there), then rerun it.
    Returns the stages finished at the kill and the resumed run's folder."""
    real_train_stage = protocol.train_stage
    calls = []

    def train_or_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == die_at_stage:
            raise Killed
        return real_train_stage(*args, **kwargs)

    monkeypatch.setattr(protocol, "train_stage", train_or_die)
    with pytest.raises(Killed):
        run(cfg)
    monkeypatch.setattr(protocol, "train_stage", real_train_stage)
    finished = json.loads(next(Path(cfg.results_dir).glob("*/run.json")).read_text())["finished_stages"]
    return finished, run(cfg)


@pytest.mark.parametrize("method", ["gain_ffn", "lora", "full_ft"])
def test_resume_after_a_kill_gives_the_same_rows(tmp_path, monkeypatch, method):
    overrides = ["experiment=smoke", SHORT, f"method={method}", "eval.lm_eval.stages=[0,3]"]
    reference_dir = run(compose_config(overrides + [f"results_dir={tmp_path / 'a'}"]))
    finished, resumed_dir = _kill_then_resume(
        monkeypatch, compose_config(overrides + [f"results_dir={tmp_path / 'b'}"]), die_at_stage=2)
    assert finished == [0, 1]
    assert resumed_dir == tmp_path / "b" / reference_dir.name
    measured = ["stage", "eval_kind", "eval_name", "metric", "document"]
    reference = pd.read_parquet(reference_dir / "rows.parquet")
    resumed = pd.read_parquet(resumed_dir / "rows.parquet")
    keep = ~reference.metric.isin(["train_seconds"])  # wall time differs, nothing else may
    pd.testing.assert_frame_equal(reference[keep].reset_index(drop=True),
                                  resumed[~resumed.metric.isin(["train_seconds"])].reset_index(drop=True))
    assert len(resumed.drop_duplicates(measured)) == len(resumed)


def _bad_run(tmp_path, *overrides):
    return compose_config(["experiment=smoke", SHORT, f"results_dir={tmp_path}", *overrides])


def test_an_empty_domain_fails_before_any_results_are_written(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    cfg = _bad_run(tmp_path / "results", "~sequence.domains.kjv_bible.source",
                   f"+sequence.domains.kjv_bible.source={{kind: local_files, paths: '{tmp_path}/*.txt'}}")
    with pytest.raises(GainbenchError, match="domain 'kjv_bible' is empty"):
        run(cfg)
    assert not (tmp_path / "results").exists()


def test_a_sequence_longer_than_the_context_is_refused(tmp_path):
    with pytest.raises(GainbenchError, match=r"seq_len=1024 is longer than .* \(512 positions\)"):
        run(_bad_run(tmp_path / "results", "train.seq_len=1024", "train.tokens_per_stage=4096",
                     "eval.val_tokens=1024"))
    assert not (tmp_path / "results").exists()


def test_a_nan_loss_stops_the_run_with_a_clear_error(tmp_path, monkeypatch):
    real_train_stage = protocol.train_stage

    def poisoned(model, params, blocks, settings, **kwargs):
        for p in params.values():
            p.data.fill_(float("nan"))
        return real_train_stage(model, params, blocks, settings, **kwargs)

    monkeypatch.setattr(protocol, "train_stage", poisoned)
    with pytest.raises(GainbenchError, match=r"loss is nan at step 1/.*lower train.lr"):
        run(_bad_run(tmp_path))
    # stage 0 finished and is kept; the failed stage left no rows
    assert json.loads(next(tmp_path.glob("*/run.json")).read_text())["finished_stages"] == [0]


def test_out_of_memory_names_the_sizes_and_the_keys_that_shrink_them(tmp_path, monkeypatch):
    import torch

    import gainbench.training.loop as loop

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop, "_forward_backward", no_memory)
    with pytest.raises(GainbenchError, match=r"out of memory in stage 1 with model 'tiny-llama'.*"
                       r"train.batch_size=4 .*train.seq_len=64.*Tried to allocate 2.00 GiB.*"
                       r"raise train.grad_accum_steps, set train.activation_checkpointing=true"):
        run(_bad_run(tmp_path))
    assert json.loads(next(tmp_path.glob("*/run.json")).read_text())["finished_stages"] == [0]


def _cli(*args, tmp_path):
    env = subprocess_env(tmp_path.parent / "cache")
    return subprocess.run([sys.executable, "-m", "gainbench", *args, f"results_dir={tmp_path}"],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["method=adalora"], "unknown method 'adalora'; choose one of: "),
    (["model=gpt5"], "unknown model 'gpt5'; choose one of: "),
    (["sequence=nine"], "unknown sequence 'nine'; choose one of: "),
    (["experiment=smoke", "model=qwen2.5"], "cannot load model 'qwen2.5' from HF hub id 'Qwen/Qwen2.5-7B'"),
])
def test_cli_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, args, message):
    result = _cli(*args, tmp_path=tmp_path / "results")
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("gainbench: error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_cli_prints_the_resolved_config(tmp_path):
    result = _cli("--cfg", "job", "model=qwen2.5", "method=gain_ffn", "train.lr=1e-3", "seed=2",
                  tmp_path=tmp_path)
    assert result.returncode == 0
    assert "name_or_path: Qwen/Qwen2.5-7B" in result.stdout and "lr: 0.001" in result.stdout


@pytest.mark.parametrize("method", ["gain", "lora", "ia3", "ia3_peft", "dora", "lora_l2",
                                    "replay_lora", "ewc"])
def test_every_method_runs_the_protocol(tmp_path, method):
    """gain_ffn and full_ft run above; the rest on a three-domain smoke sequence."""
    run_dir = run(compose_config(["experiment=smoke", SHORT, f"method={method}",
                                  "eval.lm_eval.stages=none", f"results_dir={tmp_path}"]))
    rows = pd.read_parquet(run_dir / "rows.parquet")
    ppl = rows[(rows.eval_kind == "ppl") & (rows.metric == "nll")]
    assert len(ppl) == 4 * 3 and ppl.value.notna().all()
    # training moved the model: the final losses differ from the base model's
    changed = ppl[ppl.stage == 3].value.values - ppl[ppl.stage == 0].value.values
    assert abs(changed).max() > 0


def test_gain_with_one_scale_across_stages_resumes_exactly(tmp_path, monkeypatch):
    overrides = ["experiment=smoke", SHORT, "method=gain_ffn", "method.options.absorb_each_stage=false",
                 "eval.lm_eval.stages=none"]
    reference = pd.read_parquet(run(compose_config(overrides + [f"results_dir={tmp_path / 'a'}"]))
                                / "rows.parquet")
    _, resumed_dir = _kill_then_resume(
        monkeypatch, compose_config(overrides + [f"results_dir={tmp_path / 'b'}"]), die_at_stage=3)
    resumed = pd.read_parquet(resumed_dir / "rows.parquet")
    keep = ["stage", "eval_kind", "eval_name", "metric", "value"]
    not_timing = reference.metric != "train_seconds"
    pd.testing.assert_frame_equal(reference[not_timing][keep].reset_index(drop=True),
                                  resumed[resumed.metric != "train_seconds"][keep].reset_index(drop=True))
    assert len(list((tmp_path / "b").glob("*/stages/*.safetensors"))) == 1  # only the latest scales


@pytest.mark.parametrize("method", ["gain_ffn", "lora"])
def test_figure_analyses_reproduce_the_protocol_s_own_numbers(tmp_path, method):
    """Interpolation at alpha 0/1 and the combination grid at (0,0)/(1,1) land on the stages'
    own perplexities; per-token changes are written as distributions."""
    run_dir = run(compose_config(["experiment=smoke", SHORT, f"method={method}", "analysis=figures",
                                  "analysis.per_token.domains=[kjv_bible]",
                                  "eval.lm_eval.stages=none", f"results_dir={tmp_path}"]))
    rows = pd.read_parquet(run_dir / "rows.parquet")
    nll = rows[(rows.eval_kind == "ppl") & (rows.metric == "nll")].set_index(["stage", "eval_name"]).value

    def grid_nll(kind, **point):
        selected = rows[(rows.eval_kind == kind) & (rows.metric == "nll")]
        for column, value in point.items():
            selected = selected[selected[column] == value]
        return selected.set_index("eval_name").value

    for alpha, stage in ((0.0, 0), (1.0, 1)):
        pd.testing.assert_series_equal(grid_nll("interpolation", alpha=alpha), nll[stage],
                                       check_names=False, rtol=1e-5)
    for (a, b), stage in (((0.0, 0.0), 0), ((1.0, 1.0), 2)):
        pd.testing.assert_series_equal(grid_nll("combination", a=a, b=b), nll[stage],
                                       check_names=False, rtol=1e-4)
    assert len(rows[rows.eval_kind == "combination"].drop_duplicates(["a", "b"])) == 9

    per_token = rows[rows.eval_kind == "per_token"]
    assert set(per_token.stage) == {1} and set(per_token.eval_name) == {"kjv_bible"}
    mean_change = per_token[per_token.metric == "dloss_mean_vs_stage0"].value.item()
    assert mean_change == pytest.approx(nll[(1, "kjv_bible")] - nll[(0, "kjv_bible")], abs=2e-3)
    assert sorted(p.name for p in (run_dir / "per_token").glob("*.npy")) == [
        "stage0_kjv_bible.npy", "stage1_kjv_bible.npy"]


def test_figure_analyses_survive_a_kill_between_their_stages(tmp_path, monkeypatch):
    overrides = ["experiment=smoke", SHORT, "method=lora", "analysis=figures",
                 "analysis.per_token.domains=[kjv_bible]", "eval.lm_eval.stages=none"]
    reference = pd.read_parquet(run(compose_config(overrides + [f"results_dir={tmp_path / 'a'}"]))
                                / "rows.parquet")
    # killed between the combination's stages A=1 and B=2
    _, resumed_dir = _kill_then_resume(
        monkeypatch, compose_config(overrides + [f"results_dir={tmp_path / 'b'}"]), die_at_stage=2)
    resumed = pd.read_parquet(resumed_dir / "rows.parquet")
    grid = ["eval_kind", "eval_name", "metric", "a", "b", "value"]
    combination = reference[reference.eval_kind == "combination"][grid].reset_index(drop=True)
    pd.testing.assert_frame_equal(resumed[resumed.eval_kind == "combination"][grid].reset_index(drop=True),
                                  combination)


def test_eval_stride_reaches_every_domain_s_perplexity(tmp_path):
    """End to end, one run (the property itself: tests/evaluation/test_strided_perplexity.py)."""
    run_dir = run(compose_config(["experiment=smoke", SHORT, "eval.stride=16", "eval.lm_eval.stages=none",
                                  "eval.diagnostics.stages=none", f"results_dir={tmp_path}"]))
    rows = pd.read_parquet(run_dir / "rows.parquet")
    ppl = rows[rows.eval_kind == "ppl"]
    assert len(ppl) == 4 * 3 * 3 and ppl.value.notna().all()
    assert (ppl.n == 512 - 1).all()  # every validation token but the first, not 8 blocks x 63


def test_training_bf16_weights_directly_is_warned_about_and_fp32_adapters_are_not(recwarn):
    import torch

    from gainbench.settings import settings_from_config

    protocol._warn_once.cache_clear()
    settings = settings_from_config(compose_config(["model.dtype=bfloat16", "method=full_ft"]))
    protocol._warn_if_low_precision({"w": torch.zeros(2, dtype=torch.float32)}, settings)
    assert not recwarn.list
    for _ in range(2):
        protocol._warn_if_low_precision({"w": torch.zeros(2, dtype=torch.bfloat16)}, settings)
    (warning,) = recwarn.list  # once per process
    assert "use model.dtype=float32 train.precision=bf16" in str(warning.message)

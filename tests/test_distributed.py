"""train.strategy=ddp|fsdp: two real processes (torchrun, gloo on CPU) against one process.

Stated tolerance: the base model's (stage 0) rows are bitwise equal, since each rank scores
whole batches and the per-batch sums are added in the single-process order; after training,
perplexities agree to 1e-6 relative (gradients are averaged across ranks in another summation
order; measured: up to 2e-8 here), 1e-4 for a bf16 model. Methods with dropout (LoRA's default 0.05) draw other masks per
rank and are compared with dropout off.
"""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from gainbench.distributed import Ranks
from gainbench.protocol import run
from tests.conftest import compose_config, subprocess_env

SMOKE = ["experiment=smoke", "sequence.order=[kjv_bible,icd10_medical,python_code]",
         "eval.lm_eval.stages=none", "eval.diagnostics.stages=none"]
PPL_TOLERANCE = 1e-6
BF16_PPL_TOLERANCE = 1e-4  # a bf16 model: measured 1.8e-5


def _torchrun_command(overrides, results_dir):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "gainbench", *overrides, f"results_dir={results_dir}"]


def _torchrun(overrides, results_dir, token_cache, check=True) -> subprocess.CompletedProcess:
    """Two ranks of ``python -m gainbench`` to the end; a hung run is killed with its workers."""
    cmd = _torchrun_command(overrides, results_dir)
    proc = subprocess.Popen(cmd, env=subprocess_env(token_cache), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        _kill_launcher_and_ranks(proc)
        raise
    if check:
        assert proc.returncode == 0, stderr[-3000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _kill_launcher_and_ranks(proc):
    """SIGKILL torchrun and its worker processes (which it starts in sessions of their own, so
    killing its process group alone would leave them running)."""
    workers = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
               and _parent_pid(p) == proc.pid]
    for pid in [proc.pid, *workers]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _parent_pid(proc_dir):
    try:  # /proc/<pid>/stat: "pid (name) state ppid ...", the name may hold spaces
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _rows(results_dir):
    (path,) = results_dir.glob("*/rows.parquet")
    rows = pd.read_parquet(path)
    return rows[rows.metric != "train_seconds"].set_index(
        ["stage", "eval_kind", "eval_name", "metric"]).value.sort_index()


@pytest.mark.slow
@pytest.mark.parametrize("method, strategy, config, execution", [
    ("gain_ffn", "ddp", [], ["train.checkpoint_every=1"]),  # rank 0 writes the in-stage checkpoints
    ("gain_ffn", "fsdp", ["model.dtype=bfloat16"], []),    # bf16 weights, fp32 scales in one unit
    ("lora", "ddp", ["method.options.dropout=0"], ["train.grad_accum_steps=2"]),  # 1 block a piece
    ("ewc", "fsdp", [], []),  # every weight trains, and the EWC penalty's gradient reaches the shards
    ("gain", "fsdp", ["train.lr=0.1", "method.options.decay_to_one=0.5"], []),  # changes PPL by 0.6%
    # train.shard_weights: no rank ever holds the whole weights; lm-eval runs on both ranks
    ("gain_ffn", "fsdp", ["eval.lm_eval.stages=first_last", "eval.diagnostics.stages=last"],
     ["train.shard_weights=true"]),
    ("lora", "fsdp", ["method.options.dropout=0"], ["train.shard_weights=true", "train.grad_accum_steps=2"]),
    ("ewc", "fsdp", [], ["train.shard_weights=true"]),  # the penalty on the shards themselves
])
def test_two_processes_give_the_single_process_perplexities(tmp_path, method, strategy, config,
                                                             execution):
    overrides = SMOKE + [f"method={method}", *config]
    single_dir, multi_dir = tmp_path / "single", tmp_path / "multi"
    run(compose_config(overrides + [f"results_dir={single_dir}"]))
    out = _torchrun(overrides + [f"train.strategy={strategy}", *execution], multi_dir,
                    tmp_path / "cache").stdout

    single, multi = _rows(single_dir), _rows(multi_dir)
    assert single.index.equals(multi.index)  # the same rows, written once (rank 0)
    pd.testing.assert_series_equal(single.loc[0], multi.loc[0], check_exact=True)
    ppl = single.index.get_level_values("metric") == "ppl"
    relative = ((multi[ppl] - single[ppl]) / single[ppl]).abs()
    tolerance = BF16_PPL_TOLERANCE if "model.dtype=bfloat16" in config else PPL_TOLERANCE
    assert relative.max() < tolerance, relative.sort_values().tail()
    loss_single, loss_multi = (r.xs("train_loss_mean", level="metric") for r in (single, multi))
    assert ((loss_multi - loss_single) / loss_single).abs().max() < tolerance
    if "eval.diagnostics.stages=last" in config:  # gathered matrix by matrix on sharded weights
        norms = [r.xs("update_rel_norm", level="metric") for r in (single, multi)]
        assert ((norms[1] - norms[0]) / norms[0]).abs().max() < 1e-5  # measured 5e-7
        residual = single.index.get_level_values("metric").str.startswith("span_residual")
        assert (multi[residual] - single[residual]).abs().max() < 1e-9  # both ~1e-11: in-span
    # every stage changed the weights (a no-op "training" would also match)
    assert (single.loc[3].xs("ppl", level="metric") != single.loc[0].xs("ppl", level="metric")).all()
    assert out.count("results in") == 1  # only rank 0 prints and writes
    assert len(list(multi_dir.iterdir())) == 1
    assert not list(multi_dir.glob("*/stages/partial_*"))  # cleared once each stage was saved


@pytest.mark.parametrize("n, world", [(10, 2), (3, 2), (1, 2), (7, 3), (0, 2)])
def test_shards_cover_every_item_once_in_order(n, world):
    shards = [Ranks(rank, world).shard(n) for rank in range(world)]
    assert [i for shard in shards for i in shard] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_a_distributed_strategy_without_a_launcher_is_refused_before_any_folder(tmp_path):
    from gainbench.errors import GainbenchError

    with pytest.raises(GainbenchError, match="torchrun --nproc_per_node"):
        run(compose_config(SMOKE + ["train.strategy=ddp", f"results_dir={tmp_path}"]))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("overrides, problem", [
    (["method=dora"], "method 'dora' needs whole weight matrices"),
    (["method=ia3"], "method 'ia3' needs whole weight matrices"),
    (["analysis=figures", "analysis.per_token.domains=[kjv_bible]"], "analysis=figures runs in one process"),
])
def test_what_needs_whole_weights_is_refused_with_sharded_weights_before_any_folder(
        tmp_path, overrides, problem):
    from gainbench.errors import GainbenchError

    sharded = ["train.strategy=fsdp", "train.shard_weights=true", f"results_dir={tmp_path}"]
    with pytest.raises(GainbenchError, match=problem):
        run(compose_config(SMOKE + overrides + sharded))  # before looking for a launcher
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_a_nan_on_two_ranks_stops_both_with_the_error_and_keeps_the_finished_stages(tmp_path):
    done = _torchrun(SMOKE + ["method=full_ft", "train.lr=1e30", "train.strategy=ddp"],
                     tmp_path / "runs", tmp_path / "cache", check=False)
    assert done.returncode != 0
    assert "loss is nan at step" in done.stderr
    (meta,) = (tmp_path / "runs").glob("*/run.json")
    assert json.loads(meta.read_text())["finished_stages"] == [0]


@pytest.mark.slow
@pytest.mark.parametrize("method, strategy, resumed_by", [
    ("full_ft", "fsdp", "single"),  # 2 ranks' shard files read back whole by one process
    ("full_ft", "fsdp_sharded_weights", "fsdp_sharded_weights"),  # replays stage 1 onto the shards
    ("gain_ffn", "ddp", "single"),  # a requeued job on other hardware resumes the same folder
])
def test_two_ranks_killed_mid_stage_resume_from_the_in_stage_checkpoint(tmp_path, method, strategy,
                                                                       resumed_by):
    steps = 96  # per stage: a window of a few seconds for the kill
    overrides = SMOKE + [f"method={method}", "train.checkpoint_every=1",
                         f"train.tokens_per_stage={steps * 4 * 64}"]
    run(compose_config(overrides + [f"results_dir={tmp_path / 'single'}"]))

    multi = overrides + (["train.strategy=fsdp", "train.shard_weights=true"]
                         if strategy == "fsdp_sharded_weights" else [f"train.strategy={strategy}"])
    proc = subprocess.Popen(_torchrun_command(multi, tmp_path / "multi"),
                            env=subprocess_env(tmp_path / "cache"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not list((tmp_path / "multi").glob("*/stages/partial_stage_2.pt")):
            assert proc.poll() is None and time.monotonic() < deadline, "stage 2 never checkpointed"
            time.sleep(0.02)
    finally:
        _kill_launcher_and_ranks(proc)  # the launcher and both ranks, at once
    (meta,) = (tmp_path / "multi").glob("*/run.json")
    assert json.loads(meta.read_text())["finished_stages"] == [0, 1]
    if strategy != "ddp":  # FSDP's shards were written by each rank, never gathered
        assert list(meta.parent.glob("stages/partial_stage_2.shards-*/*.distcp"))

    if resumed_by == "single":
        with contextlib.redirect_stdout(io.StringIO()) as captured:
            run(compose_config(overrides + [f"results_dir={tmp_path / 'multi'}"]))
        out = captured.getvalue()
    else:
        out = _torchrun(multi, tmp_path / "multi", tmp_path / "cache").stdout
    assert "resuming run" in out and "train icd10_medical: continuing from step" in out
    single, resumed = _rows(tmp_path / "single"), _rows(tmp_path / "multi")
    assert single.index.equals(resumed.index)
    ppl = single.index.get_level_values("metric") == "ppl"
    assert ((resumed[ppl] - single[ppl]) / single[ppl]).abs().max() < PPL_TOLERANCE
    assert not list(meta.parent.glob("stages/partial_*"))  # file and shard folders cleared

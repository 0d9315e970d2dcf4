"""Real ``kill -9`` of a ``python -m gainbench`` process, mid-stage and mid-write: the rerun of
the same command ends with the rows (and stage tensors) of an uninterrupted run; two fresh runs of
one command give identical rows. tests/test_protocol.py and tests/training/test_checkpoint.py
simulate the kill in-process with an exception; here the process really dies by SIGKILL, so no
``finally``, ``with`` or atexit handler runs and no buffer is flushed.

Every run is a separate process with a private token cache (``$GAINBENCH_CACHE`` in a temporary
folder that links the user's downloaded data wheels), on the three-domain smoke preset with an
in-stage checkpoint after every step. ``train_seconds`` (wall time) is the only row that may
differ between runs.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from gainbench.results.store import RunStore
from tests.conftest import subprocess_env

pytestmark = pytest.mark.slow

STAGES = [0, 1, 2, 3]
STEPS = 32768 // (4 * 64)  # optimiser steps per stage: tokens_per_stage / (batch_size * seq_len)
ARGS = ["experiment=smoke", "sequence.order=[kjv_bible,icd10_medical,python_code]",
        "eval.lm_eval.stages=none", "eval.diagnostics.stages=none", "train.checkpoint_every=1",
        # 128 steps a stage (about 0.6 s on one CPU thread): a wide window for the mid-stage kill
        f"train.tokens_per_stage={STEPS * 4 * 64}"]
TIMEOUT = 300
REPO = Path(__file__).resolve().parent.parent  # the subprocesses import this checkout's gainbench

# `python -c WRAPPER <file name> <n> <gainbench args...>`: gainbench's own CLI, except that the
# n-th atomic write of <file name> (counting from 1) fills its temporary file, cuts it to half
# its size and SIGKILLs its own process before the rename. Which write of a run file belongs to
# which stage: rows.parquet, rows.csv and run.json are written once per stage (stage 0 first).
WRAPPER = """
import os, signal, sys
from pathlib import Path

import gainbench.results.store as store
import gainbench.training.checkpoint as checkpoint

target, nth = sys.argv[1], int(sys.argv[2])
real_atomic_write = store.atomic_write
writes = []


def atomic_write(path, write):
    if Path(path).name == target:
        writes.append(path)
        if len(writes) == nth:
            def write_half_then_die(tmp):
                write(tmp)
                os.truncate(tmp, os.path.getsize(tmp) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            return real_atomic_write(path, write_half_then_die)
    return real_atomic_write(path, write)


store.atomic_write = atomic_write
checkpoint.atomic_write = atomic_write  # imported by name there
sys.argv = ["gainbench", *sys.argv[3:]]
from gainbench.cli import main
main()
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The subprocesses' environment: offline, one thread, a private token cache."""
    return subprocess_env(tmp_path_factory.mktemp("gainbench_cache"))


def _command(results_dir: Path) -> list[str]:
    return [sys.executable, "-m", "gainbench", *ARGS, f"results_dir={results_dir}"]


def _run_to_completion(command: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _run_dir(results_dir: Path) -> Path:
    (meta,) = results_dir.glob("*/run.json")
    return meta.parent


def _finished(run_dir: Path) -> list[int]:
    return json.loads((run_dir / "run.json").read_text())["finished_stages"]


def _measured(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows.metric != "train_seconds"].reset_index(drop=True)


def _assert_same_as(run_dir: Path, reference: Path) -> None:
    """The rerun finished every stage with the reference's rows, bit for bit, and its stage tensors."""
    assert run_dir.name == reference.name  # same run id
    assert _finished(run_dir) == STAGES
    ref_rows, rows = (pd.read_parquet(d / "rows.parquet") for d in (reference, run_dir))
    pd.testing.assert_frame_equal(_measured(ref_rows), _measured(rows))
    pd.testing.assert_frame_equal(*(_measured(pd.read_csv(d / "rows.csv")) for d in (reference, run_dir)))
    assert not rows.duplicated(["stage", "eval_kind", "eval_name", "metric", "document"]).any()
    stage_files = sorted(p.name for p in (reference / "stages").iterdir())
    assert stage_files == [f"stage_{s}.safetensors" for s in STAGES[1:]]
    assert sorted(p.name for p in (run_dir / "stages").glob("[!.]*")) == stage_files  # no partial_*
    for name in stage_files:
        assert (run_dir / "stages" / name).read_bytes() == (reference / "stages" / name).read_bytes(), name


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory) -> Path:
    """An uninterrupted run (which also fills the private token cache)."""
    results = tmp_path_factory.mktemp("reference")
    _run_to_completion(_command(results), env)
    run_dir = _run_dir(results)
    assert _finished(run_dir) == STAGES
    return run_dir


def test_two_fresh_runs_of_one_command_give_identical_rows(tmp_path, env, reference):
    _run_to_completion(_command(tmp_path), env)
    run_dir = _run_dir(tmp_path)
    _assert_same_as(run_dir, reference)
    # and the same run.json, but for the clock, the checkout's state at start and the results root
    volatile = ("started_at", "stage_seconds", "git")
    ref_meta, meta = (json.loads((d / "run.json").read_text()) for d in (reference, run_dir))
    for m in (ref_meta, meta):
        del m["config"]["results_dir"]
    assert ({k: v for k, v in meta.items() if k not in volatile}
            == {k: v for k, v in ref_meta.items() if k not in volatile})


def test_sigkill_mid_stage_then_rerun_gives_the_uninterrupted_rows(tmp_path, env, reference):
    """Poll for stage 2's in-stage checkpoint, SIGKILL the process, rerun the same command.

    The poller stops the process (SIGSTOP) as soon as it sees the checkpoint, so that the state
    the kill hits can be checked (still inside stage 2: its checkpoint on disk, its stage tensors
    and rows not), then sends SIGKILL: a stopped process dies at once, with no handler run."""
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(_command(tmp_path / "results"), env=env, cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline, partial = time.monotonic() + TIMEOUT, []
        while not partial and proc.poll() is None and time.monotonic() < deadline:
            partial = list((tmp_path / "results").glob("*/stages/partial_stage_2.pt"))
            time.sleep(0.001)
        assert partial, (f"the run ended (rc {proc.returncode}) or timed out before stage 2 "
                         f"checkpointed:\n{(tmp_path / 'killed.log').read_text()[-3000:]}")
        os.kill(proc.pid, signal.SIGSTOP)
        _, status = os.waitpid(proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        run_dir = partial[0].parent.parent
        steps_done = torch.load(partial[0], weights_only=True)["steps_done"]
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()

    assert 1 <= steps_done < STEPS  # mid-stage
    assert _finished(run_dir) == [0, 1]
    assert set(pd.read_parquet(run_dir / "rows.parquet").stage) == {0, 1}
    assert not (run_dir / "stages" / "stage_2.safetensors").exists()
    RunStore(run_dir).check(run_dir.name)  # every file the kill left reads whole
    RunStore(run_dir).load_stage_state(1)
    assert (run_dir / ".lock").exists()  # the dead job's lock file stays; its flock died with it

    rerun = _run_to_completion(_command(tmp_path / "results"), env)
    assert "resuming run" in rerun.stdout and "after stage 1" in rerun.stdout
    _assert_same_as(run_dir, reference)


@pytest.mark.parametrize("target, nth", [
    ("partial_stage_2.pt", 2),  # stage 2's second in-stage checkpoint (after its step 2)
    ("rows.parquet", 3),        # stage 2's rows
    ("run.json", 3),            # marking stage 2 done, its rows already on disk
])
def test_sigkill_mid_write_then_rerun_gives_the_uninterrupted_rows(tmp_path, env, reference, target, nth):
    results = tmp_path / "results"
    killed = subprocess.run([sys.executable, "-c", WRAPPER, target, str(nth), *ARGS,
                             f"results_dir={results}"],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-3000:]
    run_dir = _run_dir(results)

    # What the kill left: the half-written temporary file, never a half-written `target`.
    (leftover,) = run_dir.rglob(f".{target}.*.tmp")
    assert leftover.stat().st_size > 0
    assert _finished(run_dir) == [0, 1]  # run.json as the kill left it
    store = RunStore(run_dir)
    store.check(run_dir.name)  # every file still reads whole
    # stage 2's tensors are saved before its evaluation: on disk, but not what marks it done
    assert (run_dir / "stages" / "stage_2.safetensors").exists() == (target != "partial_stage_2.pt")
    on_disk = set(pd.read_parquet(run_dir / "rows.parquet").stage)
    if target == "run.json":  # stage 2's rows went in with the record that lists it: stage 2 is
        # done, whatever any reader opens; only run.json lags, until the rerun rewrites it
        assert on_disk == set(store.rows().stage) == set(store.finished_stages()) == {0, 1, 2}
    else:
        assert on_disk == set(store.rows().stage) == {0, 1}  # no trace of stage 2
    if target == "partial_stage_2.pt":  # the previous checkpoint is intact
        assert torch.load(run_dir / "stages" / target, weights_only=True)["steps_done"] == nth - 1
    else:
        assert not (run_dir / "stages" / "partial_stage_2.pt").exists()

    _run_to_completion(_command(results), env)
    _assert_same_as(run_dir, reference)
    # The rerun, holding the folder's lock, removed the dead job's temporary file (for full
    # fine-tuning's checkpoint, a copy of every weight).
    assert not list(run_dir.rglob("*.tmp"))

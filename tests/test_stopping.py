"""Clean stops: Ctrl-C and SIGTERM are one line and exit 130/143, an unwritable results folder is
refused before the model loads, and a one-process sweep with failed jobs ends non-zero."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gainbench import protocol
from gainbench.errors import GainbenchError, Interrupted
from gainbench.stopping import stops_cleanly
from tests.conftest import compose_config, subprocess_env

SMOKE = ["experiment=smoke", "eval.lm_eval.stages=none", "eval.diagnostics.stages=none",
         "sequence.order=[kjv_bible,icd10_medical]"]


def test_ctrl_c_and_sigterm_become_interrupted_naming_the_stage():
    with pytest.raises(Interrupted) as stopped:
        with stops_cleanly() as in_flight:
            in_flight.stage = 3
            raise KeyboardInterrupt
    assert stopped.value.exit_code == 130
    assert str(stopped.value) == "interrupted during stage 3; rerun the same command to resume"
    with pytest.raises(Interrupted) as stopped:
        with stops_cleanly():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises first
    assert stopped.value.exit_code == 143 and "before its first stage" in str(stopped.value)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back


def test_an_unwritable_results_folder_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setattr(protocol, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(GainbenchError, match=r"results_dir=.*a_file/runs cannot be written .*Not a "
                                             r"directory.*set results_dir"):
        protocol.run(compose_config(SMOKE + [f"results_dir={tmp_path / 'a_file' / 'runs'}"]))


@pytest.mark.slow
def test_sigterm_mid_stage_is_one_line_143_and_the_rerun_resumes(tmp_path):
    results = tmp_path / "runs"
    command = [sys.executable, "-m", "gainbench", *SMOKE, f"results_dir={results}",
               "train.tokens_per_stage=65536"]
    env = subprocess_env(tmp_path / "cache")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not glob.glob(f"{results}/*/stages/stage_1.safetensors"):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert stderr.strip().splitlines()[-1] == ("gainbench: interrupted during stage 2; "
                                               "rerun the same command to resume")
    (record,) = results.glob("*/run.json")
    assert json.loads(record.read_text())["finished_stages"] == [0, 1]
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "resuming run" in resumed.stdout


@pytest.mark.slow
def test_a_sweep_with_a_failed_job_names_it_and_exits_non_zero(tmp_path):
    command = [sys.executable, "-m", "gainbench", "-m", *SMOKE, f"results_dir={tmp_path / 'runs'}",
               "method=full_ft", "train.lr=1e20,3e-3"]
    done = subprocess.run(command, env=subprocess_env(tmp_path / "cache"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("gainbench: 1 of 2 jobs failed: tiny-llama-full_ft-embedded8-seed0-")

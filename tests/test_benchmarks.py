"""Every benchmark script runs in its quick mode and leaves its table and its files (never a timing)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

# script arguments -> (a line of the printed table's title, files it must write)
SCRIPTS = {
    ("eval_throughput.py",): ("ratio harness / bare", ["eval_throughput.json"]),
    ("train_step.py",): ("train_stage vs bare loop", ["train_step.json", "train_step.csv"]),
    ("method_cost.py",): ("method cost", ["method_cost.json", "method_cost.csv"]),
    ("absorbed_inference.py",): ("forward latency", ["absorbed_inference.json", "absorbed_inference.csv"]),
    ("protocol_profile.py",): ("protocol wall time by phase", ["protocol_profile.json",
                                                              "protocol_profile.csv"]),
    ("sharding_memory.py", "--methods", "full_ft"): ("per rank (largest): training state",
                                                     ["sharding_memory_quick.json", "sharding_memory_quick.csv"]),
    ("gpu.py", "--dry-run"): ("the plan", ["gpu_plan.json", "gpu_plan.csv"]),
    ("gpu.py",): ("gpu.py (", ["gpu_quick_*.json", "gpu_quick_*.csv"]),
}


@pytest.mark.parametrize("script", list(SCRIPTS), ids=[" ".join(s) for s in SCRIPTS])
def test_benchmark_quick_mode_prints_its_table_and_writes_its_files(script, tmp_path):
    name, *extra = script
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *extra, "--quick", "--threads", "1",
         "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    title, files = SCRIPTS[script]
    assert title in done.stdout
    for pattern in files:
        assert list(tmp_path.glob(pattern)), f"{name} wrote no {pattern}: {sorted(tmp_path.iterdir())}"

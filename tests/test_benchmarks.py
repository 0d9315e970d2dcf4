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
    ("evaluation_savings.py",): ("evaluation seconds of a sweep", ["evaluation_savings.json",
                                                                  "evaluation_savings.csv"]),
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


def test_gpu_check_dry_run_runs_every_step_on_the_cpu_and_writes_what_the_device_brings_back(tmp_path):
    """benchmarks/gpu_check.sh --dry-run: the GPU check's every step at toy size on the CPU (the
    CUDA tests with gloo, each smoke pair's accelerator side a CPU run with another thread count)."""
    import json

    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=1500, check=False)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "gpu_check summary (dry" in done.stdout and "ALL STEPS OK" in done.stdout
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [(s["step"], s["status"]) for s in summary["steps"]] == [
        (step, "ok") for step in ("install", "cuda_tests", "smoke", "gpu", "absorbed")]
    assert summary["cuda_tests"]["passed"] > 0 and summary["cuda_tests"]["failed"] == 0
    assert len(summary["smoke"]) == 3 and all(pair["ok"] for pair in summary["smoke"].values())
    for pattern in ("gpu_quick_*.json", "gpu_plan.json", "gpu_absorbed_inference_tiny-qwen2_cpu.json",
                    "gpu_smoke_compare.json", "gpu_check.log"):
        assert list(tmp_path.glob(pattern)), pattern
    assert len(list(tmp_path.iterdir())) <= 8  # the most files a device run brings back


def test_compare_rows_holds_each_group_to_its_tolerance(tmp_path):
    import pandas as pd

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import compare_rows
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    key = dict(stage=1, eval_name="wiki", document=None)
    rows = pd.DataFrame([
        {**key, "eval_kind": "ppl", "metric": "ppl", "value": 500.0, "n": 512},
        {**key, "eval_kind": "lm_eval", "eval_name": "gb_boolq_mini", "metric": "acc", "value": 0.5, "n": 16},
        {**key, "eval_kind": "train", "eval_name": "train", "metric": "train_seconds", "value": 3.0, "n": 1024},
    ])
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, ppl, acc, seconds in ((a, 500.0, 0.5, 3.0), (b, 500.04, 0.5625, 9.0)):
        folder.mkdir()
        rows.assign(value=[ppl, acc, seconds]).to_parquet(folder / "rows.parquet")
    ok = compare_rows.compare(compare_rows.read_rows(a), compare_rows.read_rows(b), "fp32")
    assert ok["ok"] and ok["rows"] == 2  # 8e-5 relative; one item of 16; wall time left out
    rows.assign(value=[500.0, 0.625, 3.0]).to_parquet(b / "rows.parquet")  # two items
    moved = compare_rows.compare(compare_rows.read_rows(a), compare_rows.read_rows(b), "fp32")
    assert not moved["ok"] and not moved["groups"]["lm-eval scores"]["ok"]
    assert moved["groups"]["perplexity (ppl, nll, bpb)"]["ok"]
    assert compare_rows.main([str(a), str(b), "--profile", "bf16", "--json", str(tmp_path / "c.json")]) == 0

"""benchmarks/data_throughput.py runs and prints its table (timings are never asserted).

Slow: a subprocess that times real tokenising and packing; what it times (pack_documents,
prepare_domain, the token cache) has its unit tests beside this file."""

import json
import os
import subprocess
import sys

import pytest

from gainbench.cli import CONFIG_DIR

SCRIPT = CONFIG_DIR.parent / "benchmarks" / "data_throughput.py"


@pytest.mark.slow
def test_quick_run_prints_its_table(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    # the tiny tokenizer and Python's own pydoc text: nothing to download or convert
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--tokenizer", "tiny",
                             "--source", "pydoc_topics", "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    for row in ("tokenise, parallelism off", "tokenise, parallelism on", "packed loader",
                "prepare_domain, fresh (cache off)", "prepare_domain, cache hit"):
        assert row in result.stdout, row
    saved = json.loads((tmp_path / "data_throughput.json").read_text())
    assert saved["quick"] is True and {"off", "on"} == set(saved["tokenize_tokens_per_s"])

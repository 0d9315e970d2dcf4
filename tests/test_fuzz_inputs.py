"""Random override sets, bad values included: every command either finishes with its rows on disk
or stops with exit code 2 and one line ``gainbench: error: <problem>; <fix>``; never a traceback,
never a run folder without the rows of its finished stages.

The draws are seeded (reproducible) and bounded: a failing draw is printed with its overrides, so
it can be rerun as a command.
"""

import contextlib
import io
import random
import sys

import pytest

from gainbench import cli
from gainbench.errors import GainbenchError
from gainbench.results.store import RunStore

BASE = ["experiment=smoke", "eval.lm_eval.stages=none", "eval.diagnostics.stages=none",
        "sequence.order=[kjv_bible,icd10_medical]", "train.tokens_per_stage=256",
        "eval.val_tokens=128"]

# Per key: values a user might type, good and bad (wrong type, out of range, not a choice).
VALUES = {
    "train.lr": ["1e-3", "3e-2", "0", "-1", "abc", "nan", "inf", "1e38"],
    "train.tokens_per_stage": ["256", "512", "0", "-5", "10", "abc"],
    "train.seq_len": ["32", "64", "0", "1", "x", "100000"],
    "train.batch_size": ["1", "2", "0", "-1"],
    "train.warmup_fraction": ["0", "0.5", "1.5"],
    "train.schedule": ["linear", "bogus"],
    "train.precision": ["bf16", "fp8"],
    "train.nonfinite": ["skip", "maybe"],
    "train.max_grad_norm": ["0.5", "-1"],
    "eval.val_tokens": ["64", "0", "-3"],
    "eval.batch_size": ["1", "0"],
    "eval.stride": ["16", "0", "1000"],
    "seed": ["1", "-1", "abc"],
    "method": ["gain", "lora", "full_ft", "nope"],
    "sequence.order": ["[kjv_bible]", "[kjv_bible,kjv_bible]", "[nope]"],
    "train.lrr": ["1e-3"],
    "+train.github_token": ["abc"],
}


def _draws(n: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    keys = sorted(VALUES)
    return [[f"{key}={rng.choice(VALUES[key])}" for key in rng.sample(keys, rng.randint(1, 3))]
            for _ in range(n)]


def _main(argv: list[str]) -> tuple[int, str]:
    """``python -m gainbench <argv>`` in this process: its exit code and its stderr."""
    err = io.StringIO()
    code = 0
    old_argv = sys.argv
    sys.argv = ["gainbench", *argv]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            cli.main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = old_argv
    return code, err.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("overrides", _draws(24), ids=lambda o: " ".join(o))
def test_a_random_command_finishes_or_is_one_line_exit_2(tmp_path, overrides):
    results = tmp_path / "runs"
    code, stderr = _main([*BASE, *overrides, f"results_dir={results}"])
    assert "Traceback" not in stderr, stderr
    if code:
        errors = [line for line in stderr.splitlines() if line.startswith("gainbench: error:")]
        assert code == 2 and len(errors) == 1 and ";" in errors[0], stderr
    for run_dir in results.glob("*") if results.exists() else []:
        if run_dir.name.startswith("."):
            continue
        store = RunStore(run_dir)
        assert store.exists(), f"{run_dir} holds no run.json"
        try:
            rows = store.rows()
        except GainbenchError as err:
            pytest.fail(f"{run_dir}: {err}")
        assert set(rows["stage"]) == set(store.finished_stages()) != set(), run_dir

"""scripts/gpu_hours.py: the paper grid's budget from the config, FLOPs or measured rates."""

import sys
from pathlib import Path

import pytest

from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_hours.py"


@pytest.fixture(scope="module")
def gpu_hours():
    yield load_script(SCRIPT)
    sys.path.remove(str(SCRIPT.parent.parent / "benchmarks"))


def test_the_budget_is_read_from_the_composed_config(gpu_hours):
    plan = gpu_hours.budget(["experiment=paper_grid", "train.tokens_per_stage=131072"])
    assert plan == {"stages": 8, "seq_len": 1024, "train_tokens": 8 * 131072,
                    "eval_tokens": 9 * 8 * 1048576}


def test_measured_rates_replace_the_flop_estimate_and_full_ft_costs_more(gpu_hours):
    plan = {"stages": 2, "seq_len": 1024, "train_tokens": 3.6e7, "eval_tokens": 7.2e7}
    measured = {("gpt2-large", "gain"): 1e4, ("gpt2-large", "eval"): 2e4}
    gain, full = gpu_hours.estimate(["gpt2-large"], ["gain", "full_ft"], plan, 0.4, measured)
    assert gain["train_h"] == pytest.approx(3.6e7 / 1e4 / 3600) and gain["basis"] == "measured"
    assert gain["eval_h"] == pytest.approx(7.2e7 / 2e4 / 3600)
    # full FT: no measurement, so 6N + 12LdT FLOPs per token at 40% of 989 TFLOP/s
    # gpt2-large: 36 blocks of 12 d^2 matmul weights, plus the (tied) LM head, which is a matmul
    n, attention = 36 * 12 * 1280**2 + 1280 * 50257, 36 * 1280 * 1024
    assert full["train_h"] == pytest.approx(3.6e7 * (6 * n + 12 * attention) / (0.4 * 989e12) / 3600,
                                            rel=1e-3)
    assert full["basis"] == "40% MFU/measured"

"""Per-token losses (Figure 1): consistent with the pooled NLL, exact zeros for no change, float16 files."""

import math

import pytest
import torch

from gainbench.evaluation.analysis.per_token import (load_per_token, loss_change_rows, per_token_losses,
                                          save_per_token)
from gainbench.evaluation.perplexity import validation_nll
from gainbench.methods.gain import absorb_gain, apply_gain, gain_modules

QUANTILE_METRICS = ["q01", "q05", "q25", "q50", "q75", "q95", "q99"]



@pytest.mark.parametrize("batch_size", [1, 3])
def test_mean_equals_pooled_validation_nll(tiny_model, token_batch, batch_size):
    losses = per_token_losses(tiny_model, token_batch, batch_size=batch_size)
    assert losses.dtype == torch.float32 and losses.shape == (4, 31)
    pooled = validation_nll(tiny_model, token_batch, n_bytes=100, batch_size=4)
    assert losses.double().mean().item() == pytest.approx(pooled.nll, rel=1e-6)
    assert losses.numel() == pooled.n_tokens


def test_mode_is_restored(tiny_model, token_batch):
    tiny_model.train()
    per_token_losses(tiny_model, token_batch)
    assert tiny_model.training
    tiny_model.eval()
    per_token_losses(tiny_model, token_batch)
    assert not tiny_model.training


def test_stage_that_changes_nothing_gives_exact_zeros(tiny_model, token_batch, tmp_path):
    before = per_token_losses(tiny_model, token_batch)
    apply_gain(tiny_model, ["attn_out", "ffn_down"])     # s = 1: absorbing it changes no weight
    assert gain_modules(tiny_model)
    absorb_gain(tiny_model)
    after = per_token_losses(tiny_model, token_batch)
    rows = loss_change_rows(before, after, "kjv_bible")
    assert [r["metric"] for r in rows] == ["mean", "std", *QUANTILE_METRICS, "frac_worse"]
    assert all(r["value"] == 0.0 for r in rows)
    assert all(r["n"] == 4 * 31 and r["eval_kind"] == "per_token" and r["eval_name"] == "kjv_bible"
               for r in rows)
    # Through float16 files too: the same losses round to the same values.
    save_per_token(tmp_path / "before.npy", before)
    save_per_token(tmp_path / "after.npy", after)
    rows = loss_change_rows(load_per_token(tmp_path / "before.npy"),
                            load_per_token(tmp_path / "after.npy"), "d")
    assert all(r["value"] == 0.0 for r in rows)


def test_mean_change_equals_pooled_change(tiny_model, token_batch):
    before = per_token_losses(tiny_model, token_batch)
    nll_before = validation_nll(tiny_model, token_batch, 100).nll
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in tiny_model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    after = per_token_losses(tiny_model, token_batch)
    rows = {r["metric"]: r["value"] for r in loss_change_rows(before, after, "d")}
    assert rows["mean"] == pytest.approx(validation_nll(tiny_model, token_batch, 100).nll - nll_before,
                                         abs=1e-5)
    assert 0.0 < rows["frac_worse"] < 1.0 and rows["std"] > 0
    qs = [rows[m] for m in QUANTILE_METRICS]
    assert qs == sorted(qs) and qs[0] < qs[-1]


def test_rows_hand_computed():
    before = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    after = torch.tensor([[0.0, 2.0], [4.0, 6.0]])           # d = after - before = [-1, 0, 1, 2]
    rows = {r["metric"]: r for r in loss_change_rows(before, after, "x", quantiles=(0.5, 0.999))}
    assert set(rows) == {"mean", "std", "q50", "q99.9", "frac_worse"}
    assert rows["mean"]["value"] == pytest.approx(0.5)
    assert rows["std"]["value"] == pytest.approx(math.sqrt(1.25))   # population std
    assert rows["q50"]["value"] == pytest.approx(0.5)
    assert rows["frac_worse"]["value"] == pytest.approx(0.5)          # only 1 and 2 rose; 0 is a tie
    assert rows["mean"]["n"] == 4


def test_rows_need_same_tokens():
    with pytest.raises(ValueError, match="same tokens"):
        loss_change_rows(torch.zeros(2, 3), torch.zeros(3, 2), "x")


def test_save_load_round_trip(tmp_path):
    losses = torch.rand(5, 63, generator=torch.Generator().manual_seed(0)) * 12 + 1e-3
    path = tmp_path / "sub" / "stage_1.npy"
    save_per_token(path, losses)
    loaded = load_per_token(path)
    assert loaded.dtype == torch.float32 and loaded.shape == losses.shape
    torch.testing.assert_close(loaded, losses, rtol=2 ** -10, atol=0)   # float16: half an ulp
    assert sorted(p.name for p in path.parent.iterdir()) == ["stage_1.npy"]   # no temp file left
    assert path.stat().st_size < losses.numel() * 2 + 256                 # 2 bytes a token
    save_per_token(path, losses * 0)                                       # overwrite in place
    assert load_per_token(path).abs().sum() == 0

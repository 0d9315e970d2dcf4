"""The column-span diagnostic per matrix role, on tiny Llama and GPT-2 models: roles from module
names, shapes and random-direction baselines from the rows, and what each role can show."""

import pandas as pd
import pytest
import torch

from gainbench.evaluation.analysis.column_span import diagnose, snapshot_weights
from gainbench.models.tiny import build_tiny_model
from gainbench.results.run_metrics import diagnostic_by_role
from tests.conftest import TINY_ARCHITECTURES

# role -> ([out, in], rank) of the tiny models' matrices (64 wide, FFN 128 for llama, 4 x 64 for gpt2)
EXPECTED = {
    "llama": {"q": (64, 64), "k": (64, 64), "v": (64, 64), "o": (64, 64), "gate": (128, 64),
              "up": (128, 64), "down": (64, 128)},
    "gpt2": {"qkv": (192, 64), "o": (64, 64), "up": (256, 64), "down": (64, 256)},
}


def _rows(before, after, layout, stage=3):
    return pd.DataFrame([dict(r, stage=stage) for r in diagnose(before, after, layout)])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_random_update_sits_at_the_random_baseline_of_every_role(arch, tiny_tokenizer):
    model = build_tiny_model(TINY_ARCHITECTURES[arch], tiny_tokenizer, init_seed=0)
    before, layout = snapshot_weights(model, ["block_linear"])
    g = torch.Generator().manual_seed(0)
    after = {n: w + 1e-2 * torch.randn(w.shape, generator=g) for n, w in before.items()}
    table = diagnostic_by_role(_rows(before, after, layout))

    assert list(table.index) == list(EXPECTED[arch])          # every role, in the role order
    for role, (m, n) in EXPECTED[arch].items():
        line = table.loc[role]
        r = min(m, n)                                          # random init: full rank
        assert line["matrices"] == line["changed"] == 2        # one per layer
        assert line["shape [out, in]"] == f"{m} x {n}" and line["rank r"] == r
        assert line["random col"] == pytest.approx((m - r) / m)
        assert line["random row"] == pytest.approx((n - r) / n)
        # a random-direction update is where the baseline says it is
        assert line["outside col(W)"] == pytest.approx(line["random col"], abs=0.03)
        assert line["outside row(W)"] == pytest.approx(line["random row"], abs=0.03)
    if arch == "gpt2":   # the fused [3d, d] c_attn: a d-dim column span in R^3d
        assert table.loc["qkv", "random col"] == pytest.approx(2 / 3)


def test_output_side_gain_changes_o_and_down_and_keeps_their_row_spans(tiny_tokenizer):
    """GAIN-FFN on the tiny Llama: only o and down change; down [64, 128] is the one role whose
    row residual could differ from 0 (random: 0.5), and GAIN's is 0 by construction."""
    from gainbench.methods.gain import absorb_gain, apply_gain

    model = build_tiny_model(TINY_ARCHITECTURES["llama"], tiny_tokenizer, init_seed=0)
    before, layout = snapshot_weights(model, ["block_linear"])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for scale in apply_gain(model, ["attn_out", "ffn_down"]).values():
            scale.copy_(torch.rand(scale.shape, generator=g) + 0.5)
    absorb_gain(model)
    after, _ = snapshot_weights(model, ["block_linear"], clone=False)
    table = diagnostic_by_role(_rows(before, after, layout))

    assert list(table.index) == ["o", "down"]               # unchanged roles are left out
    assert table.loc["down", "random row"] == 0.5 and table.loc["down", "outside row(W)"] < 1e-5
    assert table.loc["o", "random row"] == table.loc["o", "random col"] == 0.0  # square: no say
    assert (table["update size"] > 0.01).all()


def test_rows_without_baselines_and_unknown_modules():
    """Runs before the baseline rows still group by role (baselines and shape missing); a module
    no family lists is grouped by its last name part; the last diagnosed stage is used."""
    rows = []
    for stage, size in ((2, 0.5), (4, 0.1)):
        for name in ("model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.v_proj",
                     "blocks.0.mixer.in_proj"):
            for metric, value, n in (("span_residual_column", 0.0, 192),
                                     ("span_residual_row", 0.68, 192),
                                     ("intruder_dims", 1.0, 16), ("update_rel_norm", size, 192)):
                rows.append(dict(eval_kind="diagnostic", stage=stage, eval_name=name,
                                 metric=metric, value=value, n=n))
    table = diagnostic_by_role(pd.DataFrame(rows))
    assert list(table.index) == ["v", "in_proj"]
    assert table.loc["v", "update size"] == pytest.approx(0.1)   # stage 4, not 2
    assert table.loc["v", "intruder dims"] == 2 and table.loc["v", "k"] == 16
    assert table["random row"].isna().all() and table["shape [out, in]"].isna().all()
    assert diagnostic_by_role(pd.DataFrame(rows).assign(eval_kind="ppl")).empty

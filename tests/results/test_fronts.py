"""Fronts and the matched comparison on synthetic fronts with known answers."""

import math

import numpy as np
import pandas as pd
import pytest

from gainbench.results.fronts import (compare_at, interpolate, interpolation_allowance,
                                      matched_comparison, matched_values, overlap, run_budget,
                                      value_at, verdict)
from gainbench.results.runs import Run, label_variants
from tests.results.conftest import SYNTHETIC_DOMAINS, planted_change, synthetic_study


def test_interpolate_is_linear_inside_the_front_and_refuses_its_ends_and_beyond():
    x, y = [3.0, 1.0, 2.0], [30.0, 10.0, 20.0]  # unsorted on purpose
    assert interpolate(x, y, 1.5) == pytest.approx(15.0)
    assert interpolate(x, y, 2.0) == pytest.approx(20.0)  # an inner measured point
    for outside in (3.0, 3.01, 1.0, 0.99):  # the last point moves with each resample: refused
        assert math.isnan(interpolate(x, y, outside))
    assert interpolate([1.0, 1.0, 2.0, 3.0], [0.0, 2.0, 3.0, 4.0], 1.5) == pytest.approx(2.0)  # ties averaged


def test_the_interpolation_allowance_is_the_curvature_the_points_show():
    xs = [1.0, 2.0, 3.0]
    assert interpolation_allowance(xs, [1.0, 2.0, 3.0], 2.5) == pytest.approx(0.0)  # a line
    assert interpolation_allowance(xs, [1.0, 4.0, 9.0], 2.0) == 0.0                # a measured point
    # y = x^2: the chord from 2 to 3 at 2.5 is 6.5, the parabola 6.25
    assert interpolation_allowance(xs, [1.0, 4.0, 9.0], 2.5) == pytest.approx(0.25)
    assert interpolation_allowance([1.0, 2.0], [0.0, 4.0], 1.5) == pytest.approx(2.0)  # two points: half the rise


def test_overlap_of_gain_ranges():
    assert overlap([1, 3], [2, 5]) == (2, 3)
    assert overlap([1, 2], [3, 4]) is None


def _front(slope, offset, xs, seeds, noise=0.0, order=1):
    """Points y = slope * x + offset at each x, one per seed, seed s shifted by
    noise * order * (s - mean) (order -1 reverses which seed is high)."""
    rows = []
    for i, x in enumerate(xs):
        for s in range(seeds):
            shift = noise * order * (s - (seeds - 1) / 2)
            rows.append({"variant": f"lr{i}", "seed": s, "gain": x,
                         "vs base": slope * x + offset + shift})
    return pd.DataFrame(rows)


def test_matched_difference_and_a_bootstrap_interval_that_excludes_zero():
    a = _front(0.5, 0.0, [1.0, 2.0, 3.0], seeds=3, noise=0.1)
    b = _front(1.0, 1.0, [2.0, 3.0, 4.0], seeds=3, noise=0.1, order=-1)
    row = compare_at(a, b, "vs base", at=2.5)
    assert row["A"] == pytest.approx(1.25) and row["B"] == pytest.approx(3.5)
    assert row["A - B"] == pytest.approx(-2.25)
    # seed noise of +-0.2 in the paired differences cannot close a gap of 2.25 (t with 2 df)
    assert -3.3 < row["lo"] < row["A - B"] < row["hi"] < -1.2
    assert row["covers"] == "3 seeds (Student-t)"  # no per-document rows in these points
    assert verdict(row) == "A changes earlier domains less (better)"


def test_seeds_move_together_when_paired():
    a = _front(0.5, 0.0, [1.0, 2.0, 3.0], seeds=3, noise=1.0)
    b = _front(1.0, 1.0, [1.0, 2.0, 3.0], seeds=3, noise=1.0)  # the same shift per seed
    row = compare_at(a, b, "vs base", at=1.5)
    assert row["lo"] == pytest.approx(row["hi"])  # a shared seed effect cancels exactly


def test_a_difference_inside_the_seed_noise_is_no_winner():
    a = _front(1.0, 0.0, [1.0, 2.0], seeds=3, noise=2.0)
    b = _front(1.0, 0.05, [1.0, 2.0], seeds=3, noise=2.0, order=-1)
    row = compare_at(a, b, "vs base", at=1.5)
    assert row["lo"] < 0 < row["hi"]
    assert verdict(row) == "no clear difference: the interval includes 0 (below the noise)"


def test_no_overlap_in_gain_means_no_comparison():
    a = _front(1.0, 0.0, [1.0, 2.0], seeds=2)
    b = _front(1.0, 0.0, [3.0, 4.0], seeds=2)
    row = compare_at(a, b, "vs base", at=2.5)
    assert np.isnan(row["A - B"]) and verdict(row).startswith("no comparison")


def test_one_seed_gives_a_difference_but_no_interval():
    a = _front(1.0, 0.0, [1.0, 2.0], seeds=1)
    b = _front(2.0, 0.0, [1.0, 2.0], seeds=1)
    row = compare_at(a, b, "vs base", at=1.5)
    assert row["A - B"] == pytest.approx(-1.5) and np.isnan(row["lo"])
    assert verdict(row) == "no interval (one seed and runs without per-document rows)"


def test_a_target_at_a_front_s_last_point_is_refused_with_the_reason():
    a = _front(1.0, 0.0, [1.0, 2.0], seeds=2)
    b = _front(1.0, 0.0, [1.0, 3.0], seeds=2)
    row = compare_at(a, b, "vs base", at=2.0)
    assert np.isnan(row["A - B"])
    assert verdict(row) == "no comparison: A does not reach 2% (seed 0 spans 1.00 .. 2.00%, seed 1 spans 1.00 .. 2.00%)"


def test_one_method_s_value_at_a_gain_reads_its_seeds_fronts_and_says_why_not():
    a = _front(0.5, 0.0, [1.0, 2.0, 3.0], seeds=3, noise=0.1)
    row = value_at(a, "vs base", at=2.5)
    assert row["value"] == pytest.approx(1.25)   # a line: no interpolation allowance
    # seeds at -0.1, 0, +0.1 off the line: standard error 0.1 / sqrt(3), t with 2 df = 4.303
    assert row["hi"] - row["value"] == pytest.approx(4.303 * 0.1 / math.sqrt(3), rel=1e-3)
    assert row["covers"] == "3 seeds (Student-t)"
    short = value_at(a, "vs base", at=3.0)    # the front's last point: refused, with the reason
    assert np.isnan(short["value"]) and short["reason"] == (
        "the front does not reach 3% (seed 0 spans 1.00 .. 3.00%, seed 1 spans 1.00 .. 3.00%, "
        "seed 2 spans 1.00 .. 3.00%)")
    one = value_at(_front(1.0, 0.0, [1.0, 2.0], seeds=1), "vs base", at=1.5)
    assert one["value"] == pytest.approx(1.5) and np.isnan(one["lo"])
    assert one["reason"] == "one seed and runs without per-document rows"


def test_seeds_that_straddled_at_their_own_rates_add_no_interpolation_error_to_straight_fronts():
    # each seed's front is a straight line (seed 0 at y = x + 0.5, seed 1 at y = x - 0.5), and
    # each straddled 8% at its own rate: the seed means per rate would put (8.92, 9.42) and (8.93,
    # 8.43) side by side, a parabola through them bends without bound; per seed there is none
    rows = [{"variant": v, "seed": s, "gain": x, "vs base": x + (0.5 if s == 0 else -0.5)}
            for s, points in ((0, (("a", 2.0), ("b", 4.0), ("c", 8.92))),
                              (1, (("a", 2.0), ("b", 4.0), ("d", 8.93))))
            for v, x in points]
    row = value_at(pd.DataFrame(rows), "vs base", at=6.0)
    assert row["value"] == pytest.approx(6.0)
    # the seeds alone: standard error 0.5, t with 1 df = 12.706
    assert row["hi"] - row["value"] == pytest.approx(12.706 * 0.5, rel=1e-3)


def _config(tokens=None, seq_len=None, batch_size=None):
    train = {k: v for k, v in dict(tokens_per_stage=tokens, seq_len=seq_len,
                                   batch_size=batch_size).items() if v is not None}
    return Run(path=None, meta={"config": {"train": train}}, rows=pd.DataFrame())


def test_a_run_s_budget_is_its_tokens_and_the_steps_the_loop_makes_of_them():
    assert run_budget(_config(4096, 256, 4)) == (4096, 4)
    assert run_budget(_config(16384, 256, 4)) == (16384, 16)
    assert run_budget(_config(5000, 256, 4)) == (5000, 5)   # 19 whole blocks, the last step 3 of them
    assert run_budget(_config(4096)) == (4096, None)        # steps not derivable
    assert run_budget(_config()) == (None, None)            # a run made before the key was stored


def test_fronts_are_read_within_one_budget_never_across():
    # the same learning rates at two budgets, forgetting 0.4 and 0.8 per unit of adaptation:
    # read together, each budget keeps its own front
    rng = np.random.default_rng(0)
    runs = (synthetic_study(rng, forget=0.4, doc_sd=0.0, seed_sd=0.0, tokens_per_stage=4096)
            + synthetic_study(rng, forget=0.8, doc_sd=0.0, seed_sd=0.0, tokens_per_stage=16384))
    label_variants(runs)
    values = matched_values(runs, at=[7.0])
    for (tokens, steps, forget) in ((4096, 4, 0.4), (16384, 16, 0.8)):
        mine = values[(values["tokens/stage"] == tokens) & (values["method"] == "a")
                      & (values["earlier change"] == "vs base")]
        assert mine["steps/stage"].tolist() == [steps]
        # the front is read between two measured points of a curved function: within its allowance
        assert mine["value"].iloc[0] == pytest.approx(planted_change(7.0, "vs base", forget), abs=0.05)
    table = matched_comparison(runs, reference_method="a", at=7.0)
    assert sorted(set(zip(table["tokens/stage"], table["steps/stage"]))) == [(4096, 4), (16384, 16)]
    assert (table["A - B"].abs() < 1e-9).all()   # a and b share their front at each budget


def test_the_seeds_column_counts_the_seeds_both_methods_ran_not_those_of_one_learning_rate():
    # a searched front: the lowest learning rate was run on seed 0 only, the others on all three
    runs = [r for r in synthetic_study(np.random.default_rng(0))
            if not (r.meta["config"]["method"]["lr"] == 1e-3 and r.meta["config"]["seed"] > 0)]
    label_variants(runs)
    table = matched_comparison(runs, reference_method="b", at=7.0)
    assert set(table["seeds"]) == {3}
    assert set(matched_values(runs, at=[7.0])["seeds"]) == {3}


def test_a_run_past_the_gain_peak_is_not_on_the_front():
    # one seed of b also ran at a much higher rate: less gain than its best and a ruined earlier
    # domain; the comparison must not read it among the points of its gain
    runs = synthetic_study(np.random.default_rng(0))
    before = matched_comparison(runs, reference_method="b", at=7.0)
    wrecked = synthetic_study(np.random.default_rng(1), methods=("a", "b"))
    extra = next(r for r in wrecked if r.meta["config"]["method"]["name"] == "b"
                 and r.meta["config"]["method"]["lr"] == 1e-3 and r.meta["config"]["seed"] == 0)
    extra.meta["config"]["method"]["lr"] = extra.meta["config"]["train"]["lr"] = 1.0
    extra.meta["run_id"] = "b-1.0-0"
    extra.rows["run_id"] = "b-1.0-0"
    # +0.3 nats per token on the earlier domain at the end: the pooled NLL and each document's sum
    rows = extra.rows
    final_earlier = (rows["stage"] == 2) & (rows["eval_name"] == SYNTHETIC_DOMAINS[0])
    rows.loc[final_earlier & (rows["eval_kind"] == "ppl"), "value"] += 0.3
    per_doc = final_earlier & (rows["eval_kind"] == "ppl_doc")
    rows.loc[per_doc, "value"] += 0.3 * rows.loc[per_doc, "n"]
    runs = runs + [extra]
    label_variants(runs)
    after = matched_comparison(runs, reference_method="b", at=7.0)
    assert after["A - B"].tolist() == pytest.approx(before["A - B"].tolist())
    assert after["points B"].tolist() == before["points B"].tolist()


def test_by_default_every_method_meets_lora_and_gain_meets_the_baselines_the_paper_names():
    rng = np.random.default_rng(0)
    runs = (synthetic_study(rng, methods=("lora", "gain")) + synthetic_study(rng, methods=("replay_lora",))
            + synthetic_study(rng, methods=("full_ft",)))
    label_variants(runs)
    table = matched_comparison(runs, at=7.0)
    pairs = list(dict.fromkeys(zip(table["method A"], table["method B"])))
    assert pairs == [("gain", "lora"), ("replay_lora", "lora"), ("full_ft", "lora"),
                     ("gain", "replay_lora")]      # no EWC and no GAIN-FFN ran: no such pair
    assert set(table["earlier change"]) == {"vs base", "vs just-trained"}
    only = matched_comparison(runs, reference_method="full_ft", at=7.0)
    assert set(only["method B"]) == {"full_ft"} and len(only) == 2 * 3


def _with_option(runs: list[Run], **options) -> list[Run]:
    tag = "-".join(f"{k}{v}" for k, v in options.items())
    for run in runs:
        run.meta["config"]["method"]["options"] = dict(options)
        run.meta["run_id"] = f"{run.run_id}-{tag}"
    return runs


def _gain_beside_two_settings(method: str, key: str, weak, strong) -> list[Run]:
    """Exact (no document or seed noise), labelled runs of gain and of ``method`` at two values
    of its option ``key``: at ``weak`` it forgets as gain does (0.4), at ``strong`` less (0.1)."""
    rng = np.random.default_rng(0)
    exact = dict(doc_sd=0.0, seed_sd=0.0)
    runs = (synthetic_study(rng, methods=("gain",), **exact)
            + _with_option(synthetic_study(rng, methods=(method,), **exact), **{key: weak})
            + _with_option(synthetic_study(rng, methods=(method,), forget=0.1, **exact),
                           **{key: strong}))
    label_variants(runs)
    return runs


def test_a_method_run_at_two_settings_of_its_own_options_is_two_fronts():
    # EWC at a penalty too weak to matter forgets as GAIN does (0.4), at a strong one less (0.1):
    # read as one front they would mix; each setting is its own method to compare
    runs = _gain_beside_two_settings("ewc", "lam", 100.0, 1e7)
    assert {r.front for r in runs} == {"gain", "ewc (lam=100)", "ewc (lam=1e7)"}
    values = matched_values(runs, at=[7.0])
    trained = values[values["earlier change"] == "vs just-trained"].set_index("method")["value"]
    assert trained["ewc (lam=100)"] == pytest.approx(trained["gain"], abs=1e-9)
    assert trained["ewc (lam=1e7)"] == pytest.approx(planted_change(7.0, "vs just-trained", 0.1),
                                                     abs=0.05)
    # the claim "GAIN dominates EWC" meets each setting
    table = matched_comparison(runs, at=7.0)
    assert {("gain", "ewc (lam=100)"), ("gain", "ewc (lam=1e7)")} <= set(zip(table["method A"],
                                                                              table["method B"]))
    # a learning rate is a point of a front, not another front
    assert {r.front for r in synthetic_study(np.random.default_rng(1), methods=("lora",))} == {"lora"}


def test_a_reference_run_at_two_settings_of_its_own_options_is_met_at_each():
    # LoRA at two ranks is two reference fronts: GAIN is compared with each, never with neither
    runs = _gain_beside_two_settings("lora", "r", 4, 16)
    table = matched_comparison(runs, at=7.0)
    assert list(dict.fromkeys(zip(table["method A"], table["method B"]))) == [
        ("gain", "lora (r=4)"), ("gain", "lora (r=16)")]
    trained = table[table["earlier change"] == "vs just-trained"].set_index("method B")["A - B"]
    assert trained["lora (r=4)"] == pytest.approx(0.0, abs=1e-9)
    assert trained["lora (r=16)"] == pytest.approx(
        planted_change(7.0, "vs just-trained", 0.4) - planted_change(7.0, "vs just-trained", 0.1),
        abs=0.05)
    # one of its fronts named is the reference alone
    only = matched_comparison(runs, reference_method="lora (r=16)", at=7.0)
    assert set(zip(only["method A"], only["method B"])) == {("gain", "lora (r=16)"),
                                                            ("lora (r=4)", "lora (r=16)")}

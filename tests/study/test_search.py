"""The learning-rate search on synthetic gain curves (milliseconds): it brackets and bisects in
log scale, reuses what it measured, treats divergence as above every target, says why a target
is unreachable, and always stops, also on gains that do not rise with the learning rate."""

import math
import random

import pytest

from gainbench.study.search import (CLOSEST, DIVERGED, MATCHED, UNREACHABLE, SearchRules, find_scale,
                                    rounded, scale_text, search, sides_covered,
                                    straddle_candidates)


class Curve:
    """A gain curve that counts the scales it was asked for."""

    def __init__(self, gain):
        self.gain, self.asked = gain, []

    def __call__(self, scale):
        self.asked.append(scale)
        return self.gain(scale)


def power_law(scale):          # 2% at the default lr, doubling per 4x
    return 2.0 * math.sqrt(scale)


def test_brackets_up_then_bisects_in_log_scale_to_each_target():
    curve = Curve(lambda s: 1.7 * s ** 0.55)
    points = {}
    outcomes = search([2, 4, 8, 16], curve, SearchRules(tolerance=0.25), points)
    assert [o.status for o in outcomes] == [MATCHED] * 4
    for o in outcomes:
        assert abs(o.gain - o.target) <= 0.25 and points[o.scale] == o.gain
    assert curve.asked == [1.0, 4.0,            # 1.7% at the default lr: up by x4 brackets 2%
                           2.0, 1.414,          # log-midpoints, rounded to 4 digits: 2.06%
                           16.0, 8.0, 5.657, 4.757,        # 4%: up, then bisect [4, 16]
                           64.0, 32.0, 45.25, 53.81, 58.68]  # 8% was already measured at 16
    assert [o.runs for o in outcomes] == [4, 4, 0, 5]
    assert sum(o.runs for o in outcomes) == len(curve.asked) == len(set(curve.asked))


def test_a_search_over_measured_points_spends_no_run():
    points = {}
    first = search([2, 4, 8], Curve(power_law), SearchRules(), points)
    again = Curve(power_law)
    second = search([2, 4, 8], again, SearchRules(), points)
    assert again.asked == [] and [o.runs for o in second] == [0, 0, 0]
    assert [(o.scale, o.gain) for o in second] == [(o.scale, o.gain) for o in first]


def test_brackets_down_when_the_default_overshoots():
    curve = Curve(lambda s: 40.0 * math.sqrt(s))
    outcome, = search([2], curve, SearchRules())
    assert outcome.status == MATCHED and curve.asked[:3] == [1.0, 0.25, 0.0625]


def test_a_diverged_run_is_above_every_target_and_the_search_moves_down():
    curve = Curve(lambda s: DIVERGED if s >= 1 else 10.0 * s)
    outcome, = search([2], curve, SearchRules())
    assert outcome.status == MATCHED and curve.asked[:2] == [1.0, 0.25]
    # between a finite gain below the target and a diverged rate the search bisects
    curve = Curve(lambda s: DIVERGED if s > 3 else 1.0 * s)
    outcome, = search([2], curve, SearchRules())
    assert outcome.status == MATCHED and curve.asked[:3] == [1.0, 4.0, 2.0]


def test_a_nan_gain_counts_as_diverged():
    curve = Curve(lambda s: math.nan if s > 3 else 1.0 * s)
    outcome, = search([2], curve, SearchRules())
    assert outcome.status == MATCHED and outcome.scale == 2.0


def test_a_gain_that_saturates_makes_the_target_unreachable():
    curve = Curve(lambda s: min(s, 3.0))      # flat from lr_scale 3 on
    low, high = search([2, 16], curve, SearchRules())
    assert low.status == MATCHED
    assert high.status == UNREACHABLE and high.scale is None and "saturates" in high.reason
    assert max(curve.asked) == 16.0           # one step past the plateau's start, no more


def test_a_gain_that_peaks_then_diverges_makes_the_target_unreachable():
    curve = Curve(lambda s: DIVERGED if s > 20 else 5.0 - abs(math.log(s / 16)))
    outcome, = search([8], curve, SearchRules())
    assert outcome.status == UNREACHABLE and "peaks at 5% (lr_scale 16)" in outcome.reason


def test_the_lr_bounds_are_reported():
    up, = search([16], Curve(lambda s: 0.001 * s), SearchRules(max_scale=64))
    assert up.status == UNREACHABLE and "lr bound" in up.reason and "64" in up.reason
    down, = search([2], Curve(lambda s: 50.0 + s), SearchRules(min_scale=1 / 16))
    assert down.status == UNREACHABLE and "lr bound" in down.reason
    flat, = search([2], Curve(lambda s: 50.0 - s), SearchRules())
    assert flat.status == UNREACHABLE and "does not fall" in flat.reason


def test_the_default_bounds_end_the_bracketing_on_the_grid():
    down = Curve(lambda s: 50.0 + s)
    outcome, = search([2], down, SearchRules())
    assert outcome.status == UNREACHABLE and "lowest allowed" in outcome.reason
    assert down.asked == [1.0, 0.25, 0.0625, 0.01562, 0.003906, 0.0009766]   # 4**-k, no drift
    up = Curve(lambda s: 1e-6 * s)
    outcome, = search([2], up, SearchRules())
    assert outcome.status == UNREACHABLE and up.asked[-1] == 1024.0 and len(up.asked) == 6


def test_a_bracket_the_digits_cannot_split_stops_at_the_nearest_point():
    curve = Curve(lambda s: 1.0 if s < 1.55 else 3.0)   # jumps across 2% inside [1, 4]
    outcome, = search([2], curve, SearchRules(digits=2))
    assert outcome.status == CLOSEST and "cannot split" in outcome.reason
    assert outcome.gain in (1.0, 3.0) and len(curve.asked) < 8


def test_the_run_cap_stops_a_target_and_says_so():
    curve = Curve(lambda s: 1.0 if s < 1.9 else 3.0)
    outcome, = search([2], curve, SearchRules(max_runs=4))
    assert outcome.status == CLOSEST and outcome.runs == 4 and "cap" in outcome.reason


@pytest.mark.parametrize("seed", range(40))
def test_any_curve_ends_within_the_cap(seed):
    """Random curves that need not rise with the rate (a tiny random model's): every target
    ends in at most max_runs runs, and what it reports is what was measured."""
    rng = random.Random(seed)
    knots = sorted(rng.uniform(-3, 25) for _ in range(rng.randint(1, 6)))
    rng.shuffle(knots)
    cut = rng.choice([None, rng.uniform(0, 12)])

    def gain(scale):
        x = math.log(scale)
        if cut is not None and x > cut:
            return DIVERGED
        return sum(k * math.sin((i + 1) * x / 3) for i, k in enumerate(knots)) + rng.gauss(0, 0.3)

    rules = SearchRules(max_runs=6)
    points = {}
    outcomes = search([2, 4, 8, 16], Curve(gain), rules, points)
    for o in outcomes:
        assert o.runs <= rules.max_runs and o.status in (MATCHED, CLOSEST, UNREACHABLE)
        if o.status == MATCHED:
            assert abs(o.gain - o.target) <= rules.tolerance
        if o.status != UNREACHABLE:
            assert points[o.scale] == o.gain
        else:
            assert o.scale is None and o.reason
    assert all(rules.min_scale <= s <= rules.max_scale for s in points)


def test_interpolating_in_log_lr_needs_fewer_runs_on_power_laws():
    spent = {"bisect": 0, "interpolate": 0}
    for c in (0.3, 0.7, 1.5, 3.1, 6.0):
        for p in (0.5, 0.8, 1.0, 1.3):
            for step in spent:
                outcomes = search([2, 4, 8, 16], Curve(lambda s: c * s ** p), SearchRules(step=step))
                assert all(o.status == MATCHED or "lr bound" in o.reason for o in outcomes)
                spent[step] += sum(o.runs for o in outcomes)
    assert spent["interpolate"] < 0.7 * spent["bisect"]   # 8.2 against 14.25 runs per curve


def test_scales_are_rounded_so_a_resumed_search_names_the_same_runs():
    assert rounded(math.sqrt(2), 4) == 1.414 and scale_text(math.sqrt(2)) == "1.414"
    assert [scale_text(s) for s in (1.0, 4.0, 0.25, 1024.0, 1 / 1024)] == [
        "1", "4", "0.25", "1024", "0.0009766"]
    one = Curve(power_law)
    two = Curve(power_law)
    search([3, 9], one, SearchRules())
    search([3, 9], two, SearchRules())
    assert one.asked == two.asked


def test_straddle_candidates_add_the_missing_side_from_the_searched_seed():
    reference = {1.0: 1.0, 2.0: 1.9, 2.828: 2.1, 4.0: 3.0}
    # this seed measured 2.3 at the found scale: it lacks a point below 2, takes 2.0 then 1.0
    assert straddle_candidates(2, 2.828, {2.828: 2.3}, reference, 4, 4) == [2.0]
    assert straddle_candidates(2, 2.828, {2.828: 2.3, 2.0: 2.05}, reference, 4, 4) == [1.0]
    # nothing measured above on the searched seed: sqrt(factor) past this seed's highest point
    assert straddle_candidates(3.5, 4.0, {4.0: 3.2}, reference, 4, 4) == [8.0]
    assert straddle_candidates(3.5, 4.0, {4.0: 3.2, 8.0: 3.4}, reference, 4, 4) == [16.0]
    assert straddle_candidates(2, 2.828, {2.828: 2.3, 1.0: 1.1}, reference, 4, 4) == []


def test_a_side_counts_only_with_the_margin_to_spare():
    reference = {1.0: 1.0, 2.0: 1.9, 2.828: 2.1, 4.0: 3.0}
    # 1.9 and 2.1 straddle 2 but within 20% of it: a document resample moves them across
    assert sides_covered(2, {2.0: 1.9, 2.828: 2.1}) == (True, True)
    assert sides_covered(2, {2.0: 1.9, 2.828: 2.1}, 0.2) == (False, False)
    assert straddle_candidates(2, 2.828, {2.0: 1.9, 2.828: 2.1}, reference, 4, 4, 0.2) == [1.0, 4.0]
    assert straddle_candidates(2, 2.828, {1.0: 1.0, 4.0: 3.0}, reference, 4, 4, 0.2) == []
    # a diverged point is no side: past the seed's highest finite point instead
    assert straddle_candidates(2, 2.828, {1.0: 1.0, 2.828: 2.1, 16.0: math.inf}, {}, 4, 4,
                               0.2) == [5.656]
    # saturated: a higher rate (64) gained less than the best (30): no rate above is proposed,
    # only one below 6.4%
    assert straddle_candidates(8, 30.0, {16.0: 7.6, 30.0: 8.6, 64.0: 7.0}, {}, 4, 4, 0.2) == [8.0]
    with pytest.raises(ValueError, match="straddle_margin must be in"):
        SearchRules(straddle_margin=1.0)


def test_rules_are_checked():
    with pytest.raises(ValueError, match="tolerance must be > 0"):
        SearchRules(tolerance=0)
    with pytest.raises(ValueError, match="step must be one of"):
        SearchRules(step="golden")
    with pytest.raises(ValueError, match="min_scale <= start"):
        SearchRules(start=2048)
    assert find_scale(2, {}, Curve(power_law)).status == MATCHED

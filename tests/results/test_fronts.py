"""Fronts and the matched comparison on synthetic fronts with known answers."""

import math

import numpy as np
import pandas as pd
import pytest

from gainbench.results.fronts import compare_at, interpolate, overlap, verdict


def test_interpolate_is_linear_between_points_and_never_extrapolates():
    x, y = [3.0, 1.0, 2.0], [30.0, 10.0, 20.0]  # unsorted on purpose
    assert interpolate(x, y, 1.5) == pytest.approx(15.0)
    assert interpolate(x, y, 3.0) == pytest.approx(30.0)
    assert math.isnan(interpolate(x, y, 3.01)) and math.isnan(interpolate(x, y, 0.99))
    assert interpolate([1.0, 1.0, 2.0], [0.0, 2.0, 3.0], 1.0) == pytest.approx(1.0)  # ties averaged


def test_overlap_of_gain_ranges():
    assert overlap([1, 3], [2, 5]) == (2, 3)
    assert overlap([1, 2], [3, 4]) is None


def _front(slope, offset, xs, seeds, noise=0.0):
    """Points y = slope * x + offset at each x, one per seed, seed s shifted by noise * (s - mean)."""
    rows = []
    for i, x in enumerate(xs):
        for s in range(seeds):
            shift = noise * (s - (seeds - 1) / 2)
            rows.append({"variant": f"lr{i}", "seed": s, "gain": x,
                         "vs base": slope * x + offset + shift})
    return pd.DataFrame(rows)


def test_matched_difference_and_a_bootstrap_interval_that_excludes_zero():
    a = _front(0.5, 0.0, [1.0, 2.0, 3.0], seeds=3, noise=0.1)
    b = _front(1.0, 1.0, [2.0, 3.0, 4.0], seeds=3, noise=0.1)
    row = compare_at(a, b, "vs base", at=2.5, n_boot=500)
    assert row["A"] == pytest.approx(1.25) and row["B"] == pytest.approx(3.5)
    assert row["A - B"] == pytest.approx(-2.25)
    # seed noise of +-0.1 cannot close a gap of 2.25
    assert -2.6 < row["lo"] < row["A - B"] < row["hi"] < -1.9
    assert verdict(row) == "A changes earlier domains less (better)"


def test_a_difference_inside_the_seed_noise_is_no_winner():
    a = _front(1.0, 0.0, [1.0, 2.0], seeds=3, noise=2.0)
    b = _front(1.0, 0.05, [1.0, 2.0], seeds=3, noise=2.0)
    row = compare_at(a, b, "vs base", at=1.5, n_boot=500)
    assert row["lo"] < 0 < row["hi"]
    assert verdict(row) == "no clear difference (interval includes 0)"


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
    assert verdict(row) == "no interval (one seed)"

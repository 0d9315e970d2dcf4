"""The learning rate at which a method reaches a given in-domain gain: bracket, then bisect in
log learning rate (issue 16's matched comparison).

Pure logic over ``measure(scale) -> gain``: ``scale`` multiplies the method's default learning
rate (``lr_scale``), ``gain`` is the run's in-domain gain in percent (``-in-domain dPPL%``,
positive = adapted), ``math.inf`` for a run that stopped on a non-finite loss (above any target:
the search moves down). gainbench.study.matching supplies a ``measure`` that runs the protocol.

For each target, lowest first, on one seed:

1. bracket: from the measured points, find two neighbouring scales whose gains lie on either side
   of the target; where every gain is below it, multiply the highest scale by ``factor``, where
   every gain is above it, divide the lowest one;
2. bisect in log scale between the two (or, with ``step="interpolate"``, interpolate log gain
   linearly in log scale, kept inside the middle 60% of the bracket: on power-law gains about 8
   runs per method for 2, 4, 8 and 16% where bisection takes about 14) until a measured gain is
   within ``tolerance`` points of the target.

Points measured for one target serve the next, so a target already hit costs no run.

A tiny random model's gain need not rise with the learning rate, so the search never assumes it
does, and always stops: a target takes at most ``max_runs`` runs (then the nearest point is
reported as ``closest``), scales are rounded to ``digits`` significant digits (a bracket that
cannot be split further stops at ``closest``), and a target is ``unreachable`` when the gain stops
rising before it (the first fall of the gain as the rate rises is read as saturation), when the
rate bound is hit, or when the gain falls only into divergence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

DIVERGED = math.inf   # the gain of a run stopped by a non-finite loss: above any target
STEPS = ("bisect", "interpolate")
MATCHED, CLOSEST, UNREACHABLE = "matched", "closest", "unreachable"

Measure = Callable[[float], float]


@dataclass(frozen=True)
class SearchRules:
    """How the search moves; each default is a choice, not a measured optimum."""

    tolerance: float = 0.25      # a target is hit when |gain - target| <= tolerance (points of %)
    factor: float = 4.0          # the bracketing step (the committed grid's spacing)
    start: float = 1.0           # the first scale tried: the method's default learning rate
    min_scale: float = 1 / 1024  # the learning-rate bounds, as multiples of the default
    max_scale: float = 1024.0
    max_runs: int = 8            # per target, on the searched seed
    step: str = "bisect"         # bisect | interpolate (in log scale, inside the bracket)
    digits: int = 4              # significant digits of a scale, so a resumed search repeats ids
    # a seed's front straddles a target when it has points at least this fraction of the target
    # below and above it (straddle_candidates): the document bootstrap moves a run's gain by ~10%
    # of it (SD 0.16 at 2%, 0.36 at 4%, 0.9 at 8% on results/matched), and a front read near its
    # end is off the target in most resamples, which leaves the comparison without an interval
    straddle_margin: float = 0.2

    def __post_init__(self):
        problems = []
        if not self.tolerance > 0:
            problems.append(f"tolerance must be > 0, got {self.tolerance}")
        if not self.factor > 1:
            problems.append(f"factor must be > 1, got {self.factor}")
        if not 0 < self.min_scale <= self.start <= self.max_scale:
            problems.append(f"need 0 < min_scale <= start <= max_scale, got {self.min_scale}, "
                            f"{self.start}, {self.max_scale}")
        if self.max_runs < 1:
            problems.append(f"max_runs must be >= 1, got {self.max_runs}")
        if self.step not in STEPS:
            problems.append(f"step must be one of {STEPS}, got {self.step!r}")
        if not 2 <= self.digits <= 12:
            problems.append(f"digits must be in 2..12, got {self.digits}")
        if not 0 <= self.straddle_margin < 1:
            problems.append(f"straddle_margin must be in [0, 1), got {self.straddle_margin}")
        if problems:
            raise ValueError("; ".join(problems))

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def lowest(self) -> float:
        """The lowest scale tried, rounded as every scale is (1/1024 -> 0.0009766)."""
        return rounded(self.min_scale, self.digits)

    @property
    def highest(self) -> float:
        return rounded(self.max_scale, self.digits)


@dataclass
class Outcome:
    """Where one target ended on the searched seed."""

    target: float
    status: str                  # matched | closest | unreachable
    scale: float | None          # the scale reported (None when unreachable)
    gain: float | None           # its measured gain
    runs: int                    # runs this target's search asked for (reused ones included)
    reason: str = ""             # why closest or unreachable


def rounded(scale: float, digits: int) -> float:
    """``scale`` to ``digits`` significant digits: the value a run's config and id carry."""
    return float(f"{scale:.{digits}g}")


def scale_text(scale: float, digits: int = 4) -> str:
    """The override text of a scale: ``1``, ``4``, ``0.25``, ``1.414`` (an integer value is
    written as one, so the run is the one ``lr_scale=4`` of an lr sweep made)."""
    return f"{rounded(scale, digits):.{digits}g}"


def search(targets: Iterable[float], measure: Measure, rules: SearchRules = SearchRules(),
           points: dict[float, float] | None = None) -> list[Outcome]:
    """One :class:`Outcome` per target (in the order given), searched lowest target first.
    ``points`` (scale -> gain) holds what is already measured and receives every new point."""
    points = {} if points is None else points
    found = {t: find_scale(t, points, measure, rules) for t in sorted(set(targets))}
    return [found[t] for t in targets]


def find_scale(target: float, points: dict[float, float], measure: Measure,
               rules: SearchRules = SearchRules()) -> Outcome:
    """Bracket and bisect until a point of ``points`` is within tolerance of ``target``, or stop
    with the reason (module docstring). New points are added to ``points``."""
    runs = 0
    while True:
        if not points:
            start = rounded(rules.start, rules.digits)
            points[start] = _checked(measure(start))
            runs += 1
            continue
        scale, gain = nearest(points, target)
        if scale is not None and abs(gain - target) <= rules.tolerance:
            return Outcome(target, MATCHED, scale, gain, runs)
        following, status, reason = next_scale(points, target, rules)
        if following is None:
            if status == CLOSEST:
                return Outcome(target, CLOSEST, scale, gain, runs, reason)
            return Outcome(target, UNREACHABLE, None, None, runs, reason)
        if runs >= rules.max_runs:
            if status == "bracketed":
                return Outcome(target, CLOSEST, scale, gain, runs,
                               f"not within ±{rules.tolerance:g} after {runs} runs (the cap); "
                               f"nearest measured point reported")
            return Outcome(target, UNREACHABLE, None, None, runs,
                           f"not bracketed after {runs} runs (the cap); {_extremes(points)}")
        points[following] = _checked(measure(following))
        runs += 1


def nearest(points: dict[float, float], target: float) -> tuple[float | None, float | None]:
    """The finite point whose gain is nearest ``target`` (lowest scale on a tie), or Nones."""
    finite = [(abs(g - target), s, g) for s, g in points.items() if math.isfinite(g)]
    if not finite:
        return None, None
    _, scale, gain = min(finite)
    return scale, gain


def next_scale(points: dict[float, float], target: float,
               rules: SearchRules) -> tuple[float | None, str, str]:
    """``(scale to measure, state, reason)``: state ``bracketed`` or ``bracketing`` with a scale,
    or ``closest`` / ``unreachable`` with None and the reason the search stops there."""
    scales = sorted(points)
    above = [points[s] > target for s in scales]
    crossing = next((i for i in range(len(scales) - 1) if above[i] != above[i + 1]), None)
    if crossing is not None:
        a, b = scales[crossing], scales[crossing + 1]
        ga, gb = points[a], points[b]
        if gb == DIVERGED:
            peak = max((s for s in scales if s < b and math.isfinite(points[s])),
                       key=lambda s: points[s])
            if peak != a:
                return None, UNREACHABLE, (f"the gain peaks at {points[peak]:.3g}% (lr_scale "
                                           f"{peak:g}) and falls toward divergence (lr_scale {b:g})")
        middle = rounded(_between(a, b, ga, gb, target, rules.step), rules.digits)
        if middle in (a, b):
            return None, CLOSEST, (f"the gain crosses the target between lr_scale {a:g} "
                                   f"({_shown(ga)}) and {b:g} ({_shown(gb)}), which "
                                   f"{rules.digits} significant digits cannot split")
        return middle, "bracketed", ""
    if not above[-1]:   # every gain below the target: up
        top = scales[-1]
        if len(scales) > 1 and points[top] <= max(points[s] for s in scales[:-1]):
            return None, UNREACHABLE, f"the gain saturates below the target: {_extremes(points)}"
        if top >= rules.highest:
            return None, UNREACHABLE, (f"lr bound: {points[top]:.3g}% at lr_scale {top:g}, the "
                                       f"highest allowed (max_scale)")
        return min(_step(top, 1, rules), rules.highest), "bracketing", ""
    bottom = scales[0]  # every gain above the target: down
    if len(scales) > 1 and math.isfinite(points[bottom]) and points[bottom] >= min(
            points[s] for s in scales[1:]):
        return None, UNREACHABLE, f"the gain does not fall as the rate falls: {_extremes(points)}"
    if bottom <= rules.lowest:
        return None, UNREACHABLE, (f"lr bound: {_shown(points[bottom])} at lr_scale {bottom:g}, "
                                   f"the lowest allowed (min_scale), is still above the target")
    return max(_step(bottom, -1, rules), rules.lowest), "bracketing", ""


def _step(scale: float, direction: int, rules: SearchRules) -> float:
    """One bracketing step up (+1) or down (-1) from ``scale``; a scale on the grid
    ``start * factor**k`` steps to the grid's next point, so rounding never drifts (4**-3 ->
    0.01562, then 0.003906, as an lr sweep names them)."""
    k = math.log(scale / rules.start) / math.log(rules.factor)
    if abs(k - round(k)) < 1e-3:
        return rounded(rules.start * rules.factor ** (round(k) + direction), rules.digits)
    return rounded(scale * rules.factor ** direction, rules.digits)


def _between(a: float, b: float, ga: float, gb: float, target: float, step: str) -> float:
    """The scale to try inside the bracket (a, b): the log-midpoint, or (``interpolate``) where
    the line through the two ends reaches the target, in log gain against log lr when both gains
    are positive (a power law is a line there), else in gain; kept inside the middle 60%."""
    la, lb = math.log(a), math.log(b)
    fraction = 0.5
    if step == "interpolate" and math.isfinite(ga) and math.isfinite(gb) and ga != gb:
        if ga > 0 and gb > 0 and target > 0:
            fraction = (math.log(target) - math.log(ga)) / (math.log(gb) - math.log(ga))
        else:
            fraction = (target - ga) / (gb - ga)
        fraction = min(max(fraction, 0.2), 0.8)
    return math.exp(la + fraction * (lb - la))


def straddle_candidates(target: float, found: float, seed_points: dict[float, float],
                        reference: dict[float, float], factor: float, digits: int,
                        margin: float = 0.0) -> list[float]:
    """Scales to add for one seed whose finite points do not lie on both sides of ``target``
    with ``margin`` to spare (below ``target * (1 - margin)`` and above ``target * (1 +
    margin)``), so its front is read strictly inside its measured points under every likely
    resample of the validation documents: for each missing side, the searched seed's
    (``reference``) nearest scale to ``found`` beyond the margin on that side, else one step of
    ``sqrt(factor)`` past this seed's own last finite point on that side (``found`` if none);
    scales the seed already ran are skipped. Above, nothing is proposed once the seed's gain
    has fallen at a higher rate than its best (saturation: a still higher rate gains less)."""
    finite = {s: g for s, g in seed_points.items() if math.isfinite(g)}
    low, high = _margin_bounds(target, margin)
    has_below, has_above = sides_covered(target, seed_points, margin)
    step = math.sqrt(factor)
    wanted = []
    if not has_below:
        below = [s for s, g in reference.items() if g < low and s < found and s not in seed_points]
        wanted.append(max(below) if below else rounded(min([found, *finite]) / step, digits))
    if not has_above:
        above = [s for s, g in reference.items()
                 if high < g < DIVERGED and s > found and s not in seed_points]
        peak = max(finite, key=finite.get, default=found)
        if above:
            wanted.append(min(above))
        elif peak == max([found, *finite]):   # no higher rate measured less: not saturated
            wanted.append(rounded(peak * step, digits))
    return [s for s in wanted if s not in seed_points]


def sides_covered(target: float, points: dict[float, float], margin: float = 0.0) -> tuple[bool, bool]:
    """Whether ``points`` (scale -> gain) has a finite gain below ``target * (1 - margin)``, and
    one above ``target * (1 + margin)``."""
    low, high = _margin_bounds(target, margin)
    finite = [g for g in points.values() if math.isfinite(g)]
    return any(g < low for g in finite), any(g > high for g in finite)


def _margin_bounds(target: float, margin: float) -> tuple[float, float]:
    """The gains a point must be below, or above, to count as a side of ``target``."""
    return target * (1 - margin), target * (1 + margin)


def _checked(gain: float) -> float:
    """A NaN gain (a run that finished but scored a non-finite perplexity) counts as diverged."""
    return DIVERGED if math.isnan(gain) else float(gain)


def _shown(gain: float) -> str:
    return "diverged" if gain == DIVERGED else f"{gain:.3g}%"


def _extremes(points: dict[float, float]) -> str:
    shown = ", ".join(f"{_shown(points[s])} at {s:g}" for s in sorted(points))
    return f"gain by lr_scale: {shown}"

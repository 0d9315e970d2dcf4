"""The matched comparison's learning rates, found by search (issue 16, item 1):
``python scripts/match_lr.py experiment=matched --targets 2 4 8 16 --tolerance 0.25 --seeds 0 1 2``.

For each method: on the first seed, :mod:`gainbench.study.search` brackets and bisects
``lr_scale`` (the multiple of the method's default learning rate that ``experiment=matched`` and
``experiment=lr_sweep`` train with) until the run's in-domain gain is within tolerance of each
target; then the other seeds run at the rates found, and every seed gets, where it lacks one, a
run on each side of each target with ``straddle_margin`` (20% of the target) to spare, so the
fronts (gainbench.results.fronts) read every seed strictly inside its measured points, under
the document resamples of its interval too.

Every run is an ordinary run folder under the config's ``results_dir`` (``python -m gainbench
<overrides> method=<m> lr_scale=<s> seed=<n>`` makes the same one): a finished run is read, not
run again, so a search that stops resumes where it stopped and a repeated command runs nothing.
A run stopped by a non-finite loss (or whose perplexity overflows) counts as above every
target; it is remembered in the JSON this writes beside the runs
(``<results_dir>/match_lr-<digest>.json``, rewritten after every run), so a resumed search does
not train it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gainbench.errors import GainbenchError, first_line
from gainbench.files import atomic_write
from gainbench.study.search import (CLOSEST, DIVERGED, MATCHED, UNREACHABLE, Outcome, SearchRules,
                                    scale_text, search, sides_covered, straddle_candidates)

DEFAULT_TARGETS = (2.0, 4.0, 8.0, 16.0)   # in-domain gains (%) the matched study compares at
# keys the search sets itself, for every run
_OWN_KEYS = ("method", "seed", "lr_scale")
# the protocol's message for a run stopped by a non-finite loss (gainbench.training.loop)
_NONFINITE = re.compile(r"loss is (nan|inf|-inf)\b")
_STRADDLE_ROUNDS = 2   # tries per seed and target to get a point on each side


@dataclass
class RunRecord:
    """One run the search used: where it is and what it measured."""

    method: str
    seed: int
    lr_scale: float
    lr: float
    run_id: str
    gain: float | None = None       # in-domain gain (%), None when diverged
    diverged: str | None = None     # the error that stopped it
    new: bool = False               # trained (or finished) by this call

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "new"}


class RunPool:
    """The runs of one base config, by (method, seed, lr_scale): finished ones are read, the
    others run through :func:`gainbench.protocol.run` (its output goes to stderr)."""

    def __init__(self, overrides: Sequence[str], diverged: dict[str, str] | None = None,
                 say: Callable[[str], None] = print):
        self.overrides = list(overrides)
        self.diverged = dict(diverged or {})    # run id -> message, from an earlier call
        self.records: dict[str, RunRecord] = {}
        self.say = say
        self._configs: dict[tuple, tuple] = {}

    def compose(self, method: str, seed: int, scale: float):
        """The run's config and settings (composed once: Hydra takes most of a second)."""
        key = (method, seed, scale_text(scale))
        if key not in self._configs:
            cfg = compose_config([*self.overrides, f"method={method}", f"seed={seed}",
                                  f"lr_scale={key[2]}"])
            self._configs[key] = cfg, _settings(cfg)
        return self._configs[key]

    def settings(self, method: str, seed: int, scale: float):
        return self.compose(method, seed, scale)[1]

    def gain(self, method: str, seed: int, scale: float) -> float:
        """The run's in-domain gain (%), or ``DIVERGED``; runs it if it has not finished."""
        from gainbench.protocol import run
        from gainbench.results.run_metrics import run_metrics
        from gainbench.results.runs import load_run

        cfg, settings = self.compose(method, seed, scale)
        run_dir = Path(settings.results_dir) / settings.run_id
        record = RunRecord(method, seed, scale, settings.train.lr, settings.run_id)
        if settings.run_id in self.diverged and not _complete(run_dir):
            record.diverged = self.diverged[settings.run_id]
        elif not _complete(run_dir):
            record.new = True
            started = time.perf_counter()
            try:
                with contextlib.redirect_stdout(sys.stderr):   # stdout keeps the table only
                    run(cfg)
            except GainbenchError as err:
                if not _NONFINITE.search(str(err)):
                    raise
                record.diverged = first_line(err)
            self.say(f"match_lr: {method} lr_scale={scale_text(scale)} seed={seed}: "
                     f"{'diverged' if record.diverged else 'done'} in "
                     f"{time.perf_counter() - started:.0f} s ({settings.run_id})")
        if record.diverged is None:
            gain = -run_metrics(load_run(run_dir))["in-domain dPPL%"]
            record.gain = gain if math.isfinite(gain) else None
            if record.gain is None:
                record.diverged = "finished with a non-finite in-domain perplexity"
        if record.diverged:
            self.diverged[settings.run_id] = record.diverged
        self.records[settings.run_id] = record
        return DIVERGED if record.gain is None else record.gain

    @property
    def new_runs(self) -> int:
        return sum(r.new for r in self.records.values())


@dataclass
class TargetResult:
    """One target of one method: the searched seed's outcome and every seed's gain there."""

    target: float
    status: str
    lr_scale: float | None
    lr: float | None
    gains: dict[int, float | None] = field(default_factory=dict)   # seed -> gain at lr_scale
    runs: int = 0         # runs spent: the search's on the first seed, then the other seeds'
    reason: str = ""
    unstraddled: list[int] = field(default_factory=list)  # seeds with no point on one side

    def as_dict(self) -> dict:
        return {"target": self.target, "status": self.status, "lr_scale": self.lr_scale,
                "lr": self.lr, "gain": {str(s): g for s, g in self.gains.items()},
                "runs": self.runs, "reason": self.reason, "unstraddled_seeds": self.unstraddled}


@dataclass
class Match:
    """What one call found: per method, one :class:`TargetResult` per target."""

    overrides: list[str]
    targets: list[float]
    seeds: list[int]
    rules: SearchRules
    methods: dict[str, list[TargetResult]] = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)
    new_runs: int = 0
    json_path: Path | None = None
    straddle: bool = True
    # the methods asked for: the command names them all while the first is still searched
    requested: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"command": command_line(self.overrides, self.targets, self.seeds, self.rules,
                                        self.requested or list(self.methods), self.straddle),
                "overrides": self.overrides, "targets": self.targets, "seeds": self.seeds,
                "rules": self.rules.as_dict(),
                "methods": {m: [t.as_dict() for t in ts] for m, ts in self.methods.items()},
                "runs": [r.as_dict() for r in self.runs], "new_runs": self.new_runs}


def match_learning_rates(overrides: Sequence[str], methods: Sequence[str] | None = None,
                         targets: Sequence[float] = DEFAULT_TARGETS,
                         seeds: Sequence[int] | None = None, rules: SearchRules = SearchRules(),
                         straddle: bool = True, json_path: Path | None = None,
                         say: Callable[[str], None] | None = None) -> Match:
    """Search every method's rates for ``targets`` on ``seeds[0]``, run the other seeds there
    (module docstring). ``methods`` and ``seeds`` default to the experiment's sweep
    (``hydra.sweeper.params``: experiment=matched names them). Writes the JSON after every run."""
    say = say or (lambda text: print(text, file=sys.stderr))
    overrides = list(overrides)
    _refuse_own_keys(overrides)
    if methods:
        _check_methods_exist(methods)
    # composed with the first method named, so that an override of that method's own options
    # (method.options.lam=1e7 with --methods ewc) composes: the default method has no such key
    base = compose_config([*overrides, *([f"method={methods[0]}"] if methods else [])],
                          hydra_node=True)
    methods, seeds = _methods_and_seeds(base, methods, seeds)
    targets = [float(t) for t in targets]
    from gainbench.cli import _offline_when_nothing_needs_the_hub

    _offline_when_nothing_needs_the_hub(base)   # as python -m gainbench: no hub lookups in vain
    results_dir = Path(base.results_dir)
    json_path = Path(json_path) if json_path else results_dir / f"match_lr-{_digest(overrides, methods)}.json"
    pool = RunPool(overrides, _diverged_from(json_path), say)
    _check_scale_moves_lr(pool, methods, seeds[0])
    match = Match(overrides, targets, list(seeds), rules, json_path=json_path, straddle=straddle,
                  requested=list(methods))

    def save():
        match.runs, match.new_runs = list(pool.records.values()), pool.new_runs
        _write_json(json_path, match.as_dict())

    for method in methods:
        default_lr = pool.settings(method, seeds[0], 1.0).train.lr
        by_seed: dict[int, dict[float, float]] = {s: {} for s in seeds}

        def measure(scale, method=method, seed=seeds[0]):
            gain = by_seed[seed][scale] = pool.gain(method, seed, scale)
            save()
            return gain

        outcomes = search(targets, measure, rules, by_seed[seeds[0]])
        results = [_result(o, default_lr) for o in outcomes]
        match.methods[method] = results
        _run_other_seeds(pool, method, seeds, results, by_seed, rules, straddle, save)
        for result in results:
            result.gains = {s: _gain_or_none(by_seed[s].get(result.lr_scale)) for s in seeds
                            } if result.lr_scale is not None else {}
    save()
    return match


def _run_other_seeds(pool: RunPool, method: str, seeds: Sequence[int], results: list[TargetResult],
                     by_seed: dict[int, dict[float, float]], rules: SearchRules, straddle: bool,
                     save: Callable[[], None]) -> None:
    """The other seeds at each rate found, then (``straddle``) a point on each side of each
    target for every seed that lacks one."""
    reached = [r for r in results if r.status != UNREACHABLE]

    def measure(result: TargetResult, seed: int, scale: float) -> None:
        if scale not in by_seed[seed]:
            by_seed[seed][scale] = pool.gain(method, seed, scale)
            result.runs += 1
            save()

    for result in reached:
        for seed in seeds[1:]:
            measure(result, seed, result.lr_scale)
    if not straddle:
        return
    for result in reached:
        for seed in seeds:
            for _ in range(_STRADDLE_ROUNDS):
                wanted = straddle_candidates(result.target, result.lr_scale, by_seed[seed],
                                             by_seed[seeds[0]], rules.factor, rules.digits,
                                             rules.straddle_margin)
                wanted = [s for s in wanted if rules.lowest <= s <= rules.highest]
                if not wanted:
                    break
                for scale in wanted:
                    measure(result, seed, scale)
            if not all(sides_covered(result.target, by_seed[seed], rules.straddle_margin)):
                result.unstraddled.append(seed)


def _result(outcome: Outcome, default_lr: float) -> TargetResult:
    scale = outcome.scale
    return TargetResult(outcome.target, outcome.status, scale,
                        None if scale is None else default_lr * scale, {}, outcome.runs,
                        outcome.reason)


def _gain_or_none(gain: float | None) -> float | None:
    return None if gain is None or not math.isfinite(gain) else gain


# --- the table ------------------------------------------------------------------------------

def format_table(match: Match) -> str:
    """The table the script prints: method, target, status, lr found, gain per seed, runs; the
    reasons for every target not matched below it."""
    import pandas as pd

    lines, notes = [], []
    for method, results in match.methods.items():
        for r in results:
            line = {"method": method, "target %": f"{r.target:g}", "status": r.status,
                    "lr": "-" if r.lr is None else f"{r.lr:.3g}",
                    "lr_scale": "-" if r.lr_scale is None else scale_text(r.lr_scale)}
            for seed in match.seeds:
                gain = r.gains.get(seed)
                line[f"gain seed {seed}"] = "-" if gain is None else f"{gain:.2f}"
            line["runs"] = r.runs
            lines.append(line)
            if r.reason:
                notes.append(f"{method} at {r.target:g}%: {r.status}: {r.reason}")
            if r.unstraddled:
                margin = match.rules.straddle_margin
                notes.append(f"{method} at {r.target:g}%: seed(s) {r.unstraddled} have no run "
                             f"{margin:.0%} or more beyond the target on one side (a front read "
                             "there is off the target in many document resamples)")
    table = pd.DataFrame(lines).to_string(index=False) if lines else "(no methods)"
    total = len(match.runs)
    footer = [f"{total} runs used, {match.new_runs} of them run by this call; gain = in-domain "
              f"gain (%), matched = within ±{match.rules.tolerance:g} points on seed "
              f"{match.seeds[0]} (the searched seed)"]
    if match.json_path:
        footer.append(f"details: {match.json_path}")
    return "\n".join([table, *notes, *footer])


# --- configs -------------------------------------------------------------------------------

def compose_config(overrides: Sequence[str], hydra_node: bool = False):
    """The config ``python -m gainbench <overrides>`` runs (with the ``hydra`` node when asked),
    after the command line's own checks (unknown groups and keys are one-line errors)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from gainbench.cli import check_group_choices, check_override_keys
    from gainbench.paths import CONFIG_DIR

    check_group_choices(list(overrides))
    check_override_keys(list(overrides))
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides),
                           return_hydra_config=hydra_node)
    except HydraException as err:
        raise GainbenchError(f"cannot compose the config ({first_line(err)}); fix the override") from None


def command_line(overrides, targets, seeds, rules: SearchRules, methods, straddle: bool = True) -> str:
    """The script command that repeats (or resumes) this search, quoted for a shell."""
    words = [*overrides, "--methods", *methods,
             "--targets", *(f"{t:g}" for t in targets), "--tolerance", f"{rules.tolerance:g}",
             "--seeds", *map(str, seeds)]
    defaults = SearchRules()
    flags = {"factor": "--factor", "start": "--start-scale", "max_runs": "--max-runs",
             "step": "--step", "min_scale": "--min-scale", "max_scale": "--max-scale",
             "straddle_margin": "--straddle-margin"}
    for name, flag in flags.items():
        if getattr(rules, name) != getattr(defaults, name):
            value = getattr(rules, name)
            words += [flag, value if isinstance(value, str) else f"{value:g}"]
    if not straddle:
        words.append("--no-straddle")
    return "python scripts/match_lr.py " + shlex.join(words)


def _complete(run_dir: Path) -> bool:
    """Whether the run folder holds every stage (a damaged one is an error, as in the tables)."""
    from gainbench.results.runs import load_run
    from gainbench.results.store import read_record

    return bool(read_record(run_dir).get("finished_stages")) and load_run(run_dir).complete


def _settings(cfg):
    from gainbench.settings import settings_from_config

    return settings_from_config(cfg)


def _refuse_own_keys(overrides: Sequence[str]) -> None:
    for override in overrides:
        key = override.lstrip("+~").partition("=")[0]
        if key in _OWN_KEYS or override in ("-m", "--multirun"):
            raise GainbenchError(f"match_lr sets {', '.join(_OWN_KEYS)} itself and runs one config "
                                 f"at a time; drop '{override}' (use --methods and --seeds)")


def _methods_and_seeds(base, methods, seeds) -> tuple[list[str], list[int]]:
    """The methods and seeds asked for, else the experiment's sweep (``base`` is the config
    composed with its ``hydra`` node)."""
    params = base.hydra.sweeper.get("params") or {}
    if not methods:   # methods named were checked before the config was composed with one
        if "method" not in params:
            raise GainbenchError("name the methods (--methods gain lora ...) or use an experiment "
                                 "that sweeps them (experiment=matched)")
        methods = str(params["method"]).split(",")
        _check_methods_exist(methods)
    if not seeds:
        seeds = [int(s) for s in str(params.get("seed", "0")).split(",")]
    methods, seeds = [m.strip() for m in methods], [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds) or len(set(methods)) != len(methods):
        raise GainbenchError(f"methods and seeds are listed once each, got {methods} and {seeds}")
    return methods, seeds


def _check_methods_exist(methods: Sequence[str]) -> None:
    from gainbench.cli import check_group_choices

    check_group_choices([f"method={','.join(m.strip() for m in methods)}"])


def _check_scale_moves_lr(pool: RunPool, methods: Sequence[str], seed: int) -> None:
    """Every method's config composes, and lr_scale scales its learning rate."""
    for method in methods:
        one, two = (pool.settings(method, seed, s).train.lr for s in (1.0, 2.0))
        if not math.isclose(two, 2 * one, rel_tol=1e-9):
            raise GainbenchError(
                "match_lr moves lr_scale, which scales the learning rate only where the config sets "
                "train.lr: ${mul:${method.lr},${lr_scale}}; add experiment=matched (or lr_sweep) to "
                f"the overrides (method {method}: train.lr {one} at lr_scale=1 and {two} at 2)")


def _digest(overrides: Sequence[str], methods: Sequence[str]) -> str:
    """Names the JSON of one search: its overrides (but where results go) and its methods."""
    kept = sorted(o for o in overrides if not o.partition("=")[0].lstrip("+") == "results_dir")
    return hashlib.sha256(json.dumps([kept, list(methods)]).encode()).hexdigest()[:8]


def _diverged_from(json_path: Path) -> dict[str, str]:
    """Runs an earlier call saw stop on a non-finite loss (run id -> message)."""
    try:
        runs = json.loads(Path(json_path).read_text()).get("runs", [])
    except (OSError, ValueError):
        return {}
    return {r["run_id"]: r["diverged"] for r in runs if r.get("diverged")}


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=1, default=str) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


__all__ = ["CLOSEST", "DEFAULT_TARGETS", "MATCHED", "UNREACHABLE", "Match", "RunPool", "RunRecord",
           "TargetResult", "compose_config", "format_table", "match_learning_rates"]

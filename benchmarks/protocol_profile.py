"""Where a whole protocol run spends its wall time: load, tokenise, train, absorb, PPL eval, lm-eval, write.

    python benchmarks/protocol_profile.py [--reps 3] [--threads 1] [--quick] [--out DIR]
    python benchmarks/protocol_profile.py --embedded      # the default run (SmolLM2 x GAIN-FFN, ~10 min)
    python benchmarks/protocol_profile.py --override method=lora --override train.batch_size=2
    python benchmarks/protocol_profile.py --cache-lm-eval-env-info   # what-if: see below

Runs ``gainbench.protocol.run`` in this process on the config ``python -m gainbench
experiment=smoke`` would run (``--embedded``: the default config), each run into a fresh temporary
results folder. protocol.py is not changed: the functions it calls are wrapped, for the duration
of the run, with timers that charge their time to a phase. Phases nest (the tiny model's
tokenizer reads the documents inside ``load_model``), so each phase gets its own time exclusive of
the phases called inside it, and the phases plus ``other`` add up to the total:

    load model     protocol.load_model (tiny: fitting the BPE too)
    read data      protocol.read_documents
    tokenise       protocol.prepare_domain
    attach         method.attach (fresh adapter / s = 1)
    train          protocol.train_stage
    absorb         method.absorb (fold s into W / merge LoRA)
    PPL eval       the Perplexity evaluator (every domain, every stage)
    lm-eval        the LmEval evaluator (lm-eval's import and task set-up on first use included)
    diagnostics    the column-span diagnostic (base-weight snapshot and the last stage's analysis)
    write          RunStore.finish_stage / save_stage_state and method.stage_state
    provenance     provenance.run_record (git state, package versions)
    summary        the printed PPL matrix and metrics at the end (RunStore.rows, print_summary)
    other          everything not in a phase (the stage loop, row building, analyses, ...)

``--cache-lm-eval-env-info`` measures a fix outside this script's reach: lm-eval 0.4's
``simple_evaluate`` ends with ``add_env_info``, which runs ``torch.utils.collect_env`` (a
``pip list`` subprocess and more, about a second) on every call, i.e. at every stage that runs
lm-eval; the flag makes it compute that once per process (same result keys and values).

One warm-up run (shown only in the table's last column, ``cold``: it pays the first imports; none
with ``--embedded``), then ``--reps`` timed runs (default 3; 1 with ``--embedded``); the table
gives each phase's median seconds and % of the median total. Writes protocol_profile.json/.csv
(``--embedded``: protocol_profile_embedded.*) under --out (default results/bench/).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import signal
import statistics
import tempfile
import time
from collections import defaultdict

import _bench  # noqa: F401  (sets the offline environment before transformers is imported)

PHASES = ["load model", "read data", "tokenise", "attach", "train", "absorb", "PPL eval", "lm-eval",
          "diagnostics", "write", "provenance", "summary", "other"]


class PhaseClock:
    """Charges wall time to the innermost active phase (self time, so nested phases never count twice)."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)  # per wrapped function
        self.stack: list[str] = []
        self.mark = 0.0

    def _switch(self, push: str | None):
        now = time.perf_counter()
        if self.stack:
            self.seconds[self.stack[-1]] += now - self.mark
        if push is None:
            self.stack.pop()
        else:
            self.stack.append(push)
        self.mark = now

    def flush(self) -> None:
        """Charge the time since the last switch to the active phase (for a run cut short)."""
        now = time.perf_counter()
        if self.stack:
            self.seconds[self.stack[-1]] += now - self.mark
        self.mark = now

    def wrap(self, phase: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self.calls[fn.__name__] += 1
            self._switch(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                self._switch(None)
        return timed


class Terminated(BaseException):  # not an Exception: library code that catches those must not eat it
    """SIGTERM arrived: the run stops, and what was measured so far is still written."""


def _on_sigterm(signum, frame):
    raise Terminated


@contextlib.contextmanager
def patched(owner, name: str, replacement):
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


def profiled_run(cfg) -> dict:
    """Run the protocol once with timers around its steps; returns seconds per phase and total."""
    from gainbench import protocol
    from gainbench.evaluation.evaluators import ColumnSpan, LmEval, Perplexity
    from gainbench.results.store import RunStore

    clock = PhaseClock()

    def make_method(*args, **kwargs):
        method = real_make_method(*args, **kwargs)
        for attr, phase in (("attach", "attach"), ("absorb", "absorb"), ("stage_state", "write")):
            setattr(method, attr, clock.wrap(phase, getattr(method, attr)))
        return method

    real_make_method = protocol.make_method
    patches = [(protocol, "make_method", make_method)]
    patches += [(protocol, fn, clock.wrap(phase, getattr(protocol, fn))) for fn, phase in (
        ("load_model", "load model"), ("read_documents", "read data"), ("prepare_domain", "tokenise"),
        ("train_stage", "train"), ("print_summary", "summary"))]
    patches += [(protocol.provenance, "run_record", clock.wrap("provenance", protocol.provenance.run_record))]
    patches += [(evaluator, fn, clock.wrap(phase, getattr(evaluator, fn))) for evaluator, fn, phase in (
        (Perplexity, "__call__", "PPL eval"), (LmEval, "__call__", "lm-eval"),
        (ColumnSpan, "__init__", "diagnostics"), (ColumnSpan, "__call__", "diagnostics"))]
    patches += [(RunStore, fn, clock.wrap(phase, getattr(RunStore, fn))) for fn, phase in (
        ("finish_stage", "write"), ("save_stage_state", "write"), ("rows", "summary"))]
    with contextlib.ExitStack() as stack:
        for owner, name, replacement in patches:
            stack.enter_context(patched(owner, name, replacement))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))  # the run's own summary
        start, interrupted = time.perf_counter(), False
        try:
            protocol.run(cfg)
        except Terminated:
            clock.flush()
            interrupted = True
        total = time.perf_counter() - start
    seconds = {phase: clock.seconds.get(phase, 0.0) for phase in PHASES[:-1]}
    seconds["other"] = total - sum(seconds.values())
    return {"total": total, "seconds": seconds, "interrupted": interrupted,
            "stages_finished": clock.calls["finish_stage"], "calls": dict(clock.calls)}


def cache_lm_eval_env_info() -> None:
    """lm-eval's per-call environment report, computed once per process (same keys, same values)."""
    import lm_eval.evaluator

    real = lm_eval.evaluator.add_env_info
    cached: dict = {}

    def add_env_info_once(storage):
        if not cached:
            real(cached)
        storage.update(cached)

    lm_eval.evaluator.add_env_info = add_env_info_once


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedded", action="store_true",
                        help="profile the default run (SmolLM2 x GAIN-FFN x embedded8) instead of the smoke preset")
    parser.add_argument("--override", action="append", default=[], help="a Hydra override, repeatable")
    parser.add_argument("--cache-lm-eval-env-info", action="store_true",
                        help="what-if: lm-eval's per-call environment report computed once per process")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed runs first (default: 1 for the smoke preset, 0 with --embedded)")
    args = _bench.add_common_args(parser, reps=None).parse_args()
    if args.reps is None:
        args.reps = 1 if args.embedded else 3
    if args.quick:
        args.embedded = False
        args.warmup = 0
    _bench.setup(args)
    warmup = args.warmup if args.warmup is not None else (0 if args.embedded else 1)
    overrides = ([] if args.embedded else ["experiment=smoke"]) + args.override
    if args.cache_lm_eval_env_info:
        cache_lm_eval_env_info()

    signal.signal(signal.SIGTERM, _on_sigterm)  # a killed run still reports the phases it got through
    runs = []
    for i in range(warmup + args.reps):
        with tempfile.TemporaryDirectory(prefix="gainbench-profile-") as tmp:
            runs.append(profiled_run(_bench.compose(overrides + [f"results_dir={tmp}"])))
        print(f"run {i + 1}/{warmup + args.reps}: {runs[-1]['total']:.1f} s"
              + (" (warm-up)" if i < warmup else "")
              + (f" (INTERRUPTED by SIGTERM after {runs[-1]['stages_finished']} finished stages: partial)"
                 if runs[-1]["interrupted"] else ""))
        if runs[-1]["interrupted"]:
            warmup = min(warmup, i)  # report the partial run rather than nothing
            break
    cold = runs[0]
    # a partial (SIGTERM) run is reported only when no complete timed run exists
    timed = [r for r in runs[warmup:] if not r["interrupted"]] or runs[warmup:]
    total = statistics.median(r["total"] for r in timed)
    rows = []
    for phase in PHASES:
        values = [r["seconds"][phase] for r in timed]
        med = statistics.median(values)
        rows.append({"phase": phase, "seconds": med, "min_s": min(values), "max_s": max(values),
                     "percent": 100 * med / total, "cold_seconds": cold["seconds"][phase]})
    rows.append({"phase": "total", "seconds": total, "min_s": min(r["total"] for r in timed),
                 "max_s": max(r["total"] for r in timed), "percent": 100.0, "cold_seconds": cold["total"]})
    name = ("embedded default" if args.embedded else "experiment=smoke") + (
        " with lm-eval's env info cached" if args.cache_lm_eval_env_info else "") + (
        " - INTERRUPTED, partial" if timed[-1]["interrupted"] else "")
    _bench.print_table(
        [{**r, "seconds": f"{r['seconds']:.2f}", "%": f"{r['percent']:.1f}",
          "min-max s": f"{r['min_s']:.2f}-{r['max_s']:.2f}", "cold run s": f"{r['cold_seconds']:.2f}"}
         for r in rows],
        ["phase", "seconds", "%", "min-max s", "cold run s"],
        title=f"protocol wall time by phase ({name} {' '.join(args.override)}; median of {len(timed)} "
              f"run(s) after {warmup} warm-up)")
    stem = ("protocol_profile_embedded" if args.embedded else "protocol_profile") + (
        "_env_info_cached" if args.cache_lm_eval_env_info else "")
    _bench.write_results(args.out, stem,
                         rows, settings=vars(args) | {"out": str(args.out), "overrides": overrides},
                         runs=runs, warmup=warmup)


if __name__ == "__main__":
    main()

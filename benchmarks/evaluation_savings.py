"""What a sweep's evaluation saves: the base model evaluated once (eval.reuse_base) and only the
matched comparison's cells scored (eval.cells=matched).

    python benchmarks/evaluation_savings.py [--threads 1] [--reps 2] [--quick] [--out DIR]
    python benchmarks/evaluation_savings.py --model smollm2          # the embedded SmolLM2-135M
    python benchmarks/evaluation_savings.py --methods gain_ffn lora full_ft --seeds 0 1 2

Runs one small sweep (``--methods`` x ``--seeds``; by default ``experiment=smoke``'s tiny model on
its eight domains, lm-eval at the first and last stage as in the default config) in this
process four times, each into a fresh results folder: eval.reuse_base off / on x eval.cells
all / matched. A run's evaluation seconds are the wall time of every evaluator call of every
stage, taken around ``BaseRows.measure`` (so the key, the entry's read or write and the
evaluation itself; training, loading and writing rows are not counted), per evaluator and for
stage 0 apart; a sweep's are the sum over its runs. After one untimed warm-up run (lm-eval's
first call sets itself up), each repetition runs the four sweeps in turn, the order reversed
every other repetition; ratios are taken per repetition against reuse off / cells all, so load
from other work on the machine hits both sides. ``cells`` counts the perplexity matrix's cells
a run scores (30 of 72 at T=8 with matched).

What to expect: reuse evaluates stage 0 once per sweep instead of once per run (lm-eval's stage 0
once per seed: its seed is in the key), saving up to 1/(T+1) of the perplexity evaluation;
matched scores 4T - 2 of T(T+1) cells. Writes evaluation_savings.json/.csv (``--model
smollm2``: evaluation_savings_smollm2.*) under --out (default results/bench/).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from collections import defaultdict

import _bench

SETTINGS = {  # name -> overrides; the first is the baseline of every ratio
    "reuse off, cells all": ["eval.reuse_base=false", "eval.cells=all"],
    "reuse on, cells all": ["eval.reuse_base=true", "eval.cells=all"],
    "reuse off, cells matched": ["eval.reuse_base=false", "eval.cells=matched"],
    "reuse on, cells matched": ["eval.reuse_base=true", "eval.cells=matched"],
}
GROUPS = {"Perplexity": "PPL", "LmEval": "lm-eval"}   # the others (diagnostic, ...): "other evaluators"
PARTS = [f"{kind}, {stage}" for kind in ("PPL", "lm-eval", "other evaluators")
         for stage in ("stage 0", "1..T")]
MODELS = {  # the sweep's base config; evaluation is what is timed, so a stage trains one step
    "tiny": ["experiment=smoke", "eval.lm_eval.stages=first_last"],
    "smollm2": ["model=smollm2", "train.tokens_per_stage=1024", "eval.lm_eval.limit=16"],
}


def timed_sweep(base: list[str], methods: list[str], seeds: list[int]) -> dict:
    """Run every method x seed into one fresh results folder; evaluation seconds by evaluator
    and stage (0 or later), cells scored per run, and the sweep's wall time."""
    import pandas as pd

    from gainbench import protocol
    from gainbench.evaluation.base_rows import BaseRows

    seconds: dict[str, float] = defaultdict(float)
    real = BaseRows.measure

    def measure(self, evaluator, model, stage):
        start = time.perf_counter()
        try:
            return real(self, evaluator, model, stage)
        finally:
            kind = GROUPS.get(type(evaluator).__name__, "other evaluators")
            seconds[f"{kind}, stage 0" if stage == 0 else f"{kind}, 1..T"] += time.perf_counter() - start

    cells, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gainbench-savings-") as tmp:
        BaseRows.measure = measure
        try:
            for method in methods:
                for seed in seeds:
                    cfg = _bench.compose([*base, f"method={method}", f"seed={seed}",
                                          f"results_dir={tmp}"])
                    with contextlib.redirect_stdout(io.StringIO()):   # the run's own summary
                        run_dir = protocol.run(cfg)
                    ppl = pd.read_parquet(run_dir / "rows.parquet").query("eval_kind == 'ppl'")
                    cells.append(len(ppl.drop_duplicates(["stage", "eval_name"])))
        finally:
            BaseRows.measure = real
    return {"eval_s": sum(seconds.values()), "seconds": dict(seconds), "cells": cells,
            "wall_s": time.perf_counter() - start}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", choices=sorted(MODELS))
    parser.add_argument("--methods", nargs="+", default=["gain_ffn", "lora"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--override", action="append", default=[], help="a Hydra override, repeatable")
    args = _bench.add_common_args(parser, reps=2).parse_args()
    if args.quick:
        args.model, args.methods = "tiny", args.methods[:1]
        args.override = ["sequence.order=[kjv_bible,icd10_medical,python_code]", *args.override]
    _bench.setup(args)
    base = MODELS[args.model] + args.override
    sequence = _bench.compose(base).sequence
    domains = len(sequence.order or sequence.domains)

    with tempfile.TemporaryDirectory(prefix="gainbench-savings-warmup-") as tmp, \
            contextlib.redirect_stdout(io.StringIO()):
        from gainbench import protocol

        protocol.run(_bench.compose([*base, f"method={args.methods[0]}", f"results_dir={tmp}"]))
    names = list(SETTINGS)
    sweeps: dict[str, list[dict]] = {name: [] for name in names}
    for rep in range(args.reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            sweeps[name].append(timed_sweep(base + SETTINGS[name], args.methods, args.seeds))
            print(f"repetition {rep + 1}/{args.reps}, {name}: evaluation "
                  f"{sweeps[name][-1]['eval_s']:.2f} s of {sweeps[name][-1]['wall_s']:.1f} s")

    baseline = [s["eval_s"] for s in sweeps[names[0]]]
    rows = []
    for name in names:
        cells = sweeps[name][0]["cells"]
        rows.append({
            "setting": name, "runs": len(cells),
            "cells per run": f"{statistics.median(cells):.0f} of {domains * (domains + 1)}",
            "eval s": statistics.median(s["eval_s"] for s in sweeps[name]),
            "ratio": _bench.paired_ratios([s["eval_s"] for s in sweeps[name]], baseline),
            **{f"{part} s": statistics.median(s["seconds"].get(part, 0.0) for s in sweeps[name])
               for part in PARTS},
            "sweep wall s": statistics.median(s["wall_s"] for s in sweeps[name])})
    columns = ["setting", "runs", "cells per run", "eval s", "ratio vs reuse off, all",
               *[f"{part} s" for part in PARTS], "sweep wall s"]
    _bench.print_table(
        [{**r, "eval s": f"{r['eval s']:.2f}", "ratio vs reuse off, all": _bench.fmt_ratio(r["ratio"]),
          **{k: f"{v:.2f}" for k, v in r.items() if k.endswith(" s") and k != "eval s"}}
         for r in rows], columns,
        title=f"evaluation seconds of a sweep ({args.model}, T={domains}, methods "
              f"{' '.join(args.methods)} x seeds {' '.join(map(str, args.seeds))}; median of "
              f"{args.reps} repetition(s); ratio per repetition [min-max])")
    expected_cells = (4 * domains - 2) / (domains * (domains + 1))
    print(f"expected: matched scores {4 * domains - 2} of {domains * (domains + 1)} cells "
          f"({expected_cells:.3f}); reuse evaluates stage 0 once instead of {rows[0]['runs']} "
          f"times (lm-eval's once per seed)")
    stem = "evaluation_savings" + ("" if args.model == "tiny" else f"_{args.model}")
    _bench.write_results(args.out, stem, rows,
                         settings=vars(args) | {"out": str(args.out), "overrides": base},
                         sweeps=sweeps)


if __name__ == "__main__":
    main()

"""Find, per method, the learning rates that reach given in-domain gains; run every seed there.

    python scripts/match_lr.py experiment=matched results_dir=results/matched --targets 2 4 8 16 --tolerance 0.25 --seeds 0 1 2
    python scripts/match_lr.py experiment=matched --methods gain lora_gain_modules --targets 4
    python scripts/match_lr.py experiment=matched train.tokens_per_stage=16384 results_dir=results/matched-16 --step interpolate
    python scripts/match_lr.py experiment=matched train.tokens_per_stage=16384 results_dir=results/matched-16 --methods lora --start-scale 5

--start-scale saves runs at a larger budget: with 4x the steps, the rate found for a target at
the smaller budget, over 4, is a guess to start from (the search brackets from it either way).

Arguments with '=' are gainbench overrides (as for python -m gainbench; the search sets method,
seed and lr_scale itself); methods and seeds default to the experiment's sweep (experiment=matched
names them). On the first seed each method's lr is bracketed (x or / --factor) and bisected in
log lr until the in-domain gain is within --tolerance points of each target, or --max-runs runs
per target are spent (then the nearest point is reported); the other seeds run at the rates found,
and a seed with no run on one side of a target (at least --straddle-margin of the target beyond
it) gets one there (--no-straddle: not), so its front is read inside its measured points.
Every run is an ordinary run folder under results_dir, so a finished one is read, not run again:
rerunning the command resumes the search. Prints the table to stdout (progress goes to stderr)
and writes it as <results_dir>/match_lr-<digest>.json. The search: gainbench/study/search.py;
the runs: gainbench/study/matching.py.
"""

import argparse
import os
import sys

from gainbench.errors import GainbenchError, Interrupted
from gainbench.study.matching import DEFAULT_TARGETS, format_table, match_learning_rates
from gainbench.study.search import STEPS, SearchRules

_RULES = SearchRules()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="gainbench config overrides")
    p.add_argument("--methods", nargs="+", help="default: the experiment's hydra.sweeper.params.method")
    p.add_argument("--targets", nargs="+", type=float, default=list(DEFAULT_TARGETS), metavar="GAIN",
                   help="in-domain gains (%%) to match (default: %(default)s)")
    p.add_argument("--tolerance", type=float, default=_RULES.tolerance,
                   help="a target is hit within +- this many points (default: %(default)s)")
    p.add_argument("--seeds", nargs="+", type=int,
                   help="the first is searched; default: the experiment's hydra.sweeper.params.seed")
    p.add_argument("--factor", type=float, default=_RULES.factor,
                   help="bracketing step on the lr (default: %(default)s)")
    p.add_argument("--start-scale", type=float, default=_RULES.start,
                   help="the first lr tried on the searched seed, as a multiple of the method's "
                        "default; the bracketing grid is start x factor**k (default: %(default)s)")
    p.add_argument("--max-runs", type=int, default=_RULES.max_runs,
                   help="runs per target on the searched seed (default: %(default)s)")
    p.add_argument("--min-scale", type=float, default=_RULES.min_scale,
                   help="lowest lr, as a multiple of the method's default (default: %(default)s)")
    p.add_argument("--max-scale", type=float, default=_RULES.max_scale,
                   help="highest lr, as a multiple of the method's default (default: %(default)s)")
    p.add_argument("--step", choices=STEPS, default=_RULES.step,
                   help="inside a bracket: log-midpoint or log-linear interpolation (default: %(default)s)")
    p.add_argument("--straddle-margin", type=float, default=_RULES.straddle_margin,
                   help="a side of a target counts as measured by a point this fraction of the "
                        "target beyond it (default: %(default)s)")
    p.add_argument("--no-straddle", action="store_true",
                   help="do not add a run on each side of a target for seeds that lack one")
    p.add_argument("--json", help="where the JSON goes (default: <results_dir>/match_lr-<digest>.json)")
    return p


def rules_of(args) -> SearchRules:
    return SearchRules(tolerance=args.tolerance, factor=args.factor, start=args.start_scale,
                       min_scale=args.min_scale, max_scale=args.max_scale,
                       max_runs=args.max_runs, step=args.step,
                       straddle_margin=args.straddle_margin)


def main(argv=None) -> None:
    args = parser().parse_intermixed_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as python -m gainbench
    try:
        match = match_learning_rates(args.overrides, args.methods, args.targets, args.seeds,
                                     rules_of(args), straddle=not args.no_straddle,
                                     json_path=args.json)
    except Interrupted as err:
        print(f"match_lr: {err}", file=sys.stderr)   # the message says how to resume
        sys.exit(err.exit_code)
    except (GainbenchError, ValueError) as err:
        sys.exit(f"match_lr: error: {err}")
    print(format_table(match))


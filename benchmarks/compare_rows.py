"""Do two runs of the same config give the same rows? One run on CUDA against the same run on the
CPU (or under another launcher), within stated tolerances per kind of row.

    python benchmarks/compare_rows.py RUN_A RUN_B [--profile fp32|bf16] [--label NAME] [--json OUT]

RUN_A / RUN_B: a run folder (holding rows.parquet) or a results_dir holding exactly one. The
two must have the same rows (stage, eval_kind, eval_name, metric, document); ``train_seconds``
(wall time) is left out. Every other value is compared under its group's tolerance, and the
largest difference of each group is reported beside it, so a GPU run also measures how far apart
the devices are. Exit status 1 when a group is out of tolerance or the rows differ.

Tolerances (|a - b| <= abs + rel * |a|). ``fp32``: the same arithmetic in another summation
order (CUDA's fp32 matmuls are IEEE, no TF32, unless a run turns it on) after a few optimiser
steps: perplexities and losses 1e-4 relative; lm-eval accuracies may move by one item (1/n);
the column-span diagnostic's fractions 1e-4, its intruder count by one. ``bf16`` (model.dtype=
bfloat16 on both sides: each device rounds its own kernels' results to 8 bits of mantissa): ten
to a hundred times looser, two items on lm-eval.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

KEY = ["stage", "eval_kind", "eval_name", "metric", "document"]
LEFT_OUT = {"train_seconds"}  # wall time, never equal

# group -> which rows, and (abs, rel, items) per profile; ``items`` is in units of 1/n
GROUPS = {
    "perplexity (ppl, nll, bpb)": (lambda r: r.eval_kind == "ppl", {"fp32": (0, 1e-4, 0), "bf16": (0, 1e-2, 0)}),
    "per-document NLL sums": (lambda r: r.eval_kind == "ppl_doc", {"fp32": (0, 1e-4, 0), "bf16": (0, 1e-2, 0)}),
    "training losses": (lambda r: r.metric.isin(["train_loss_mean", "train_loss_final"]),
                        {"fp32": (0, 1e-4, 0), "bf16": (0, 2e-2, 0)}),
    "training counts": (lambda r: r.metric.isin(["trainable_params", "skipped_batches"]),
                        {"fp32": (0, 0, 0), "bf16": (0, 0, 0)}),
    "lm-eval scores": (lambda r: r.eval_kind == "lm_eval", {"fp32": (0, 0, 1), "bf16": (0, 0, 2)}),
    "diagnostic: update size": (lambda r: r.metric == "update_rel_norm",
                                {"fp32": (0, 1e-3, 0), "bf16": (0, 5e-2, 0)}),
    "diagnostic: span fractions": (lambda r: r.metric.str.startswith("span_residual"),
                                   {"fp32": (1e-4, 0, 0), "bf16": (5e-2, 0, 0)}),
    "diagnostic: intruder dims": (lambda r: r.metric == "intruder_dims", {"fp32": (1, 0, 0), "bf16": (2, 0, 0)}),
}


def read_rows(path: Path) -> pd.DataFrame:
    """rows.parquet of a run folder, or of the one run in a results_dir."""
    path = Path(path)
    files = [path / "rows.parquet"] if (path / "rows.parquet").exists() else sorted(path.glob("*/rows.parquet"))
    if len(files) != 1:
        raise SystemExit(f"compare_rows: {path} holds {len(files)} runs' rows.parquet; name one run folder")
    rows = pd.read_parquet(files[0])
    if "document" not in rows:
        rows["document"] = None
    rows = rows[~rows.metric.isin(LEFT_OUT)].copy()
    rows["document"] = rows["document"].fillna("")
    return rows.set_index(KEY).sort_index()


def compare(a: pd.DataFrame, b: pd.DataFrame, profile: str) -> dict:
    """Per group: rows compared, the largest |difference| (and relative one), the tolerance and
    whether every row is inside it; plus the rows only one side has."""
    only_a = a.index.difference(b.index)
    only_b = b.index.difference(a.index)
    both = a.index.intersection(b.index)
    a, b = a.loc[both], b.loc[both]
    frame = a.reset_index()[KEY].assign(a=a.value.to_numpy(), b=b.value.to_numpy(),
                                        n=a["n"].to_numpy() if "n" in a else math.nan)
    frame["diff"] = (frame.a - frame.b).abs()
    frame["rel"] = frame["diff"] / frame.a.abs().where(frame.a != 0)
    covered = pd.Series(False, index=frame.index)
    groups = {}
    for name, (select, tolerances) in GROUPS.items():
        mask = select(frame) & ~covered
        covered |= mask
        if not mask.any():
            continue
        atol, rtol, items = tolerances[profile]
        part = frame[mask]
        allowed = atol + rtol * part.a.abs() + items / part.n.where(part.n > 0, 1) + 1e-12
        both_nan = part.a.isna() & part.b.isna()
        inside = (part["diff"] <= allowed) | both_nan
        worst = part.loc[part["diff"].idxmax()] if part["diff"].notna().any() else part.iloc[0]
        groups[name] = {"rows": int(mask.sum()), "max_abs_diff": float(part["diff"].max()),
                        "max_rel_diff": float(part["rel"].max()) if part["rel"].notna().any() else 0.0,
                        "tolerance": {"abs": atol, "rel": rtol, "items": items},
                        "ok": bool(inside.all()), "outside": int((~inside).sum()),
                        "worst": {k: worst[k] for k in (*KEY, "a", "b")}}
    rest = frame[~covered]
    if len(rest):  # a metric no group names: must be equal
        inside = (rest["diff"] <= 1e-12) | (rest.a.isna() & rest.b.isna())
        groups["other (exact)"] = {"rows": len(rest), "max_abs_diff": float(rest["diff"].max()),
                                   "max_rel_diff": float(rest["rel"].max() or 0.0),
                                   "tolerance": {"abs": 0, "rel": 0, "items": 0},
                                   "ok": bool(inside.all()), "outside": int((~inside).sum()),
                                   "metrics": sorted(rest.metric.unique())}
    return {"profile": profile, "rows": len(frame), "only_in_a": [list(map(str, i)) for i in only_a[:10]],
            "only_in_b": [list(map(str, i)) for i in only_b[:10]],
            "same_rows": not len(only_a) and not len(only_b), "groups": groups,
            "ok": not len(only_a) and not len(only_b) and all(g["ok"] for g in groups.values())}


def print_report(label: str, result: dict) -> None:
    from tabulate import tabulate

    print(f"{label}: {result['rows']} rows compared, profile {result['profile']}: "
          f"{'WITHIN tolerance' if result['ok'] else 'OUT OF tolerance'}")
    if not result["same_rows"]:
        print(f"  rows only in A: {result['only_in_a']}\n  rows only in B: {result['only_in_b']}")
    table = [[name, g["rows"], f"{g['max_abs_diff']:.3g}", f"{g['max_rel_diff']:.3g}",
              " + ".join(f"{v:g} {k}" for k, v in g["tolerance"].items() if v) or "exact",
              "ok" if g["ok"] else f"{g['outside']} OUTSIDE"] for name, g in result["groups"].items()]
    print(tabulate(table, headers=["group", "rows", "max |a-b|", "max rel", "tolerance", ""],
                   disable_numparse=True))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--profile", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--label", default=None, help="name of the pair in the report")
    parser.add_argument("--json", type=Path, default=None,
                        help="add the result under --label to this JSON file (created if absent)")
    args = parser.parse_args(argv)
    label = args.label or f"{args.run_a} vs {args.run_b}"
    result = compare(read_rows(args.run_a), read_rows(args.run_b), args.profile)
    result.update(a=str(args.run_a), b=str(args.run_b))
    print_report(label, result)
    if args.json:
        existing = json.loads(args.json.read_text()) if args.json.exists() else {}
        existing[label] = result
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(existing, indent=2, default=str) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

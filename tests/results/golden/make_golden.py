"""Writes the golden results folder: hand-made runs with round perplexities (T = 3 domains).

    python tests/results/golden/make_golden.py      # rewrites tests/results/golden/runs/

The numbers below are the whole truth of the folder; tests/results/test_golden.py states by hand
what every table must print for them. Rows go through RunStore, as a real run's do.
"""

import math
from pathlib import Path

import numpy as np

from gainbench.results.store import RunStore

DOMAINS = ["d1", "d2", "d3"]
BASE = [10.0, 20.0, 40.0]
# validation PPL after stages 0..3 (rows) on d1..d3 (columns); domain k is trained at stage k
PPL = {
    ("gain_ffn", 3e-3, 0): [BASE, [8, 19, 38], [8.5, 16, 36], [9, 17, 30]],
    ("gain_ffn", 3e-3, 1): [BASE, [7, 19, 38], [7.5, 18, 36], [8, 18, 32]],
    ("lora", 1e-4, 0): [BASE, [9.5, 20, 40], [9.6, 19, 40], [10, 20, 38]],
    ("lora", 1e-3, 0): [BASE, [8, 21, 42], [11, 16, 44], [12, 22, 36]],
    ("lora", 1e-3, 1): [BASE, [8, 21, 42]],                      # killed after stage 1
}
TRAINABLE = {"gain_ffn": 100, "lora": 2000}
# lm-eval task t1: (accuracy, stderr) at stage 0 and at the last stage
DOWNSTREAM = {("gain_ffn", 3e-3, 0): [(0.5, 0.05), (0.6, 0.05)],
              ("gain_ffn", 3e-3, 1): [(0.5, 0.05), (0.55, 0.05)],
              ("lora", 1e-4, 0): [(0.5, 0.05), (0.4, 0.05)]}


def _row(method, seed, stage, kind, name, metric, value, **extra):
    return dict(run_id=f"tiny-{method}-seed{seed}", model="tiny", method=method, seed=seed,
                sequence="golden3", stage=stage, stage_domain="base" if stage == 0 else DOMAINS[stage - 1],
                eval_kind=kind, eval_name=name, metric=metric, value=value,
                stderr=extra.pop("stderr", math.nan), n=extra.pop("n", 100), **extra)


def write(root: Path) -> None:
    for (method, lr, seed), ppl in PPL.items():
        run_id = f"tiny-{method}-golden3-seed{seed}-lr{lr:g}"
        store = RunStore(root / run_id)
        meta = {"run_id": run_id,
                "config": {"seed": seed, "model": {"name": "tiny"},
                           "method": {"name": method, "lr": lr}, "train": {"lr": lr},
                           "sequence": {"name": "golden3", "order": DOMAINS}},
                "trainable_params": TRAINABLE[method], "stage_seconds": {}}
        for stage, values in enumerate(ppl):
            rows = [_row(method, seed, stage, "ppl", d, "nll", math.log(v))
                    for d, v in zip(DOMAINS, values)]
            scores = DOWNSTREAM.get((method, lr, seed))
            if scores and stage in (0, len(DOMAINS)):
                acc, se = scores[0 if stage == 0 else 1]
                rows.append(_row(method, seed, stage, "lm_eval", "t1", "acc", acc, stderr=se))
            if (method, seed) == ("gain_ffn", 0):
                rows += _figure_rows(method, seed, stage, store.run_dir)
            meta["stage_seconds"][str(stage)] = 1.0
            store.finish_stage(stage, rows, meta)
            meta = store.meta()


def _figure_rows(method, seed, stage, run_dir: Path) -> list[dict]:
    """The figure analyses' outputs: per-token arrays (stages 0, 1), interpolation across stage 1
    and the combination grid of stages 1 and 2."""
    rows = []
    if stage in (0, 1):
        losses = np.array([[2.0, 3.0, 1.0, 4.0], [2.5, 2.0, 3.0, 1.5]]) - 0.25 * stage
        (run_dir / "per_token").mkdir(parents=True, exist_ok=True)
        np.save(run_dir / "per_token" / f"stage{stage}_d2.npy", losses.astype(np.float16))
    if stage == 1:
        for alpha in (0.0, 0.5, 1.0):
            for d, before, after in zip(DOMAINS, BASE, PPL[(method, 3e-3, seed)][1]):
                nll = math.log(before) + alpha * (math.log(after) - math.log(before))
                rows.append(_row(method, seed, stage, "interpolation", d, "nll", nll, alpha=alpha))
    if stage == 2:
        for a in (0.0, 1.0):
            for b in (0.0, 1.0):
                for j, d in enumerate(DOMAINS):
                    nll = math.log(BASE[j]) - 0.1 * a * (j == 0) - 0.1 * b * (j == 1) - 0.01 * (a + b)
                    rows.append(_row(method, seed, stage, "combination", d, "nll", nll, a=a, b=b))
    return rows


if __name__ == "__main__":
    import shutil

    root = Path(__file__).parent / "runs"
    shutil.rmtree(root, ignore_errors=True)
    write(root)
    print(f"wrote {len(PPL)} runs to {root}")

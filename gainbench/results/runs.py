"""Run folders as the tables and figures see them: rows, provenance and a variant label.

A *variant* is everything that changes training except the seed: runs of one model and method
that differ in learning rate (or any other training key) are different variants, runs that
differ only in their seed are repetitions of one variant and are averaged over. Keys that only
change what is *measured* (lm-eval tasks, figure analyses, logging) do not make a new variant.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from gainbench import metrics
from gainbench.results.store import read_finished_rows, read_record

# Config keys that can change the trained weights or the validation numbers.
# (The near-duplicate screen drops training documents, so it changes the weights too.)
_TRAINING_PREFIXES = ("model.", "method.", "train.", "sequence.", "eval.val_tokens", "eval.stride",
                      "eval.val_doc_tokens", "eval.val_dedup")


@dataclass
class Run:
    path: Path
    meta: dict
    rows: pd.DataFrame          # finished stages only
    variant: str = field(default="")

    @property
    def config(self) -> dict:
        return self.meta["config"]

    @property
    def model(self) -> str:
        return self.config["model"]["name"]

    @property
    def method(self) -> str:
        return self.config["method"]["name"]

    @property
    def sequence(self) -> str:
        return self.config["sequence"].get("name", "")

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def lr(self) -> float:
        return float(self.config.get("train", {}).get("lr") or self.config["method"].get("lr") or 0.0)

    @property
    def run_id(self) -> str:
        return self.meta.get("run_id", self.path.name)

    @property
    def domains(self) -> list[str]:
        return list(self.config["sequence"]["order"])

    @cached_property
    def loss_matrix(self) -> pd.DataFrame:
        """The ``(stages done + 1, T)`` NLL matrix (see ``gainbench.metrics``)."""
        return metrics.loss_matrix(self.rows, self.domains)

    @property
    def complete(self) -> bool:
        return len(self.loss_matrix) == len(self.domains) + 1


def find_runs(paths) -> list[Path]:
    """Run folders under the given paths (a run folder itself or any folder above runs)."""
    runs = set()
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        runs.update(p.parent for p in path.rglob("run.json") if ".multirun" not in p.parts)
    return sorted(runs)


def load_run(run_dir: Path) -> Run:
    """One run folder; a GainbenchError when its rows do not cover its finished stages."""
    meta = read_record(run_dir)
    return Run(Path(run_dir), meta, read_finished_rows(run_dir, meta))


def load_runs(paths, warn=sys.stderr) -> list[Run]:
    """Every run under ``paths``, labelled with its variant; of several runs with the same
    (model, sequence, variant, seed) only the one with the most finished stages is kept (ties:
    the first run id), and the others are named on ``warn``."""
    runs = [load_run(p) for p in find_runs(paths)]
    label_variants(runs)
    kept: dict[tuple, Run] = {}
    for run in sorted(runs, key=lambda r: (-len(r.meta["finished_stages"]), r.run_id)):
        key = (run.model, run.sequence, run.variant, run.seed)
        if key in kept:
            if warn is not None:
                print(f"note: {run.run_id} repeats {kept[key].run_id} (same variant and seed); "
                      f"using the latter", file=warn)
            continue
        kept[key] = run
    return sorted(kept.values(), key=lambda r: (r.model, r.sequence, r.method, r.lr, r.variant, r.seed))


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return flat


def _training_keys(run: Run) -> dict:
    return {k: v for k, v in _flatten(run.config).items() if k.startswith(_TRAINING_PREFIXES)}


def label_variants(runs: list[Run]) -> None:
    """Name each run's variant: the method, plus the training keys in which runs of the same
    model and method differ, e.g. ``lora (lr=0.0001)``; just the method when they agree."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault((run.model, run.method), []).append(run)
    for group in groups.values():
        flats = [_training_keys(r) for r in group]
        keys = sorted({k for f in flats for k in f})
        differing = [k for k in keys if len({f.get(k) for f in flats}) > 1]
        # A differing `x.name` (another sequence, say) says it all; its sub-keys are noise.
        named = {k[: -len(".name")] for k in differing if k.endswith(".name")}
        differing = [k for k in differing
                     if k.endswith(".name") or not any(k.startswith(n + ".") for n in named)]
        for run, flat in zip(group, flats):
            parts = []
            for key in differing:
                part = f"{key.rsplit('.', 1)[-1]}={json.loads(flat[key]) if key in flat else '-'}"
                if part not in parts:   # train.lr mirrors method.lr
                    parts.append(part)
            run.variant = f"{run.method} ({', '.join(parts)})" if parts else run.method

"""Run folders as the tables and figures see them: rows, provenance and a variant label.

A *variant* is everything that changes training except the seed: runs of one model and method
that differ in learning rate (or any other training key) are different variants, runs that
differ only in their seed are repetitions of one variant and are averaged over. Keys that only
change what is *measured* (lm-eval tasks, figure analyses, logging) do not make a new variant,
except ``eval.cells``: a ``matched`` run lacks cells an ``all`` run has (forgetting, the full PPL
matrix), so the two are not repeats of each other. Its numbers are those of the same run with every
cell scored, so a front takes both as one point (``point_variant``).

Tables and figures keep the registry names (``lora (lr=0.0001)``); what a reader sees goes
through ``display_name`` / ``display_variant`` (``LoRA (lr=0.0001)``), the one place that names
methods for print. ``load_studies`` splits a folder of several results folders (``results/``)
into one group per results folder and sequence, so that only comparable runs share a table.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path

import pandas as pd

from gainbench import metrics
from gainbench.config.evaluation import EvalSettings
from gainbench.results.store import read_finished_rows, read_record

# Config keys that can change the trained weights or the validation numbers (or which there are).
# (The near-duplicate screen drops training documents, so it changes the weights too.)
_TRAINING_PREFIXES = ("model.", "method.", "train.", "sequence.", "eval.val_tokens", "eval.stride",
                      "eval.val_doc_tokens", "eval.val_dedup", "eval.cells")
# Variant keys that change which numbers a run has, not the numbers it has: runs that differ only
# in them are one point of a front (``point_variant``).
SCORING_KEYS = ("cells",)
# What a run recorded before eval.cells existed did (the field's neutral value): score every cell.
_CELLS_BEFORE_THE_KEY = next(f for f in fields(EvalSettings) if f.name == "cells").metadata["neutral"]

# How each method is named in print (tables, figures, legends); the registry name stays in the
# data. A method missing here prints under its registry name.
DISPLAY_NAMES = {"gain": "GAIN", "gain_ffn": "GAIN-FFN", "lora": "LoRA", "full_ft": "full FT",
                 "ia3": "(IA)³", "ia3_peft": "(IA)³ (PEFT)", "dora": "DoRA", "lora_l2": "LoRA+L2",
                 "replay_lora": "replay-LoRA", "ewc": "EWC", "lora_all": "LoRA-all",
                 "lora_gain_modules": "LoRA-GAIN-modules"}


def display_name(method: str) -> str:
    """``gain_ffn`` -> ``GAIN-FFN``; an unknown name unchanged."""
    return DISPLAY_NAMES.get(method, method)


def display_variant(variant: str) -> str:
    """A variant label in print: ``lora (lr=0.0001)`` -> ``LoRA (lr=0.0001)``."""
    method, sep, rest = str(variant).partition(" (")
    return display_name(method) + sep + rest


def method_of(variant: str) -> str:
    """The registry name in a variant label or a front: ``ewc (lam=1e7)`` -> ``ewc``."""
    return str(variant).partition(" (")[0]


@dataclass
class Run:
    path: Path | None           # the run folder; None for a run made in memory (tests, fronts)
    meta: dict
    rows: pd.DataFrame          # finished stages only
    variant: str = field(default="")
    # the training keys this run's variant differs in from its model and method's other runs,
    # short key -> short value (``label_variants``): {"lr": "0.003"}
    variant_keys: dict[str, str] = field(default_factory=dict)
    # the part of ``variant_keys`` that is the method's own options (``method.options.*``): runs
    # that differ in them are different methods to compare, each with its own front
    option_keys: dict[str, str] = field(default_factory=dict)

    @property
    def front(self) -> str:
        """The method as a front names it: ``ewc``, or ``ewc (lam=1e7)`` beside ``ewc (lam=100)``
        where runs of one method differ in its options; the learning rate, the seed and the
        budget are points and panels of a front, not another one."""
        return _variant_label(self.method, self.option_keys)

    @property
    def label(self) -> str:
        """The variant as a reader sees it: ``LoRA (lr=0.0001)``."""
        return display_variant(self.variant)

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
    def cells(self) -> str:
        """``eval.cells``: which cells of the PPL matrix the run scored (``all`` before the key)."""
        return (self.config.get("eval") or {}).get("cells", _CELLS_BEFORE_THE_KEY)

    @property
    def run_id(self) -> str:
        """The id run.json records; the folder's name for a record without one."""
        if self.meta.get("run_id"):
            return self.meta["run_id"]
        if self.path is None:
            raise ValueError("a run without a folder needs a run_id in its meta")
        return self.path.name

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
    return _labelled([load_run(p) for p in find_runs(paths)], warn)


def _labelled(runs: list[Run], warn) -> list[Run]:
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


@dataclass
class Study:
    """Runs that share a table: one results folder (or everything named) and one sequence."""
    title: str        # e.g. "results/sweep: embedded8 (3 domains: wiki_history, kjv_bible, ...)"
    slug: str         # a folder name for its files, e.g. "sweep"
    runs: list[Run]


def load_studies(paths, warn=sys.stderr) -> list[Study]:
    """The runs under ``paths`` in comparable groups, each labelled and de-duplicated as by
    ``load_runs``.

    Runs are grouped by sequence (name and domain order: numbers of different sequences do not
    compare). A single path holding several results folders (folders with run folders directly
    inside, like ``results/`` with ``miniature/`` and ``sweep/``) is also split by results
    folder; several paths named together are read together (say an lr sweep and an l2 sweep
    drawn on the same axes)."""
    paths = [Path(p) for p in paths]
    folders = find_runs(paths)
    by_folder = len(paths) == 1 and len({f.parent for f in folders}) > 1
    groups: dict[tuple, list[Run]] = {}
    for folder in folders:
        run = load_run(folder)
        where = folder.parent if by_folder else None
        groups.setdefault((str(where or ""), run.sequence, tuple(run.domains)), []).append(run)
    sequences_per_folder: dict[str, int] = {}
    for where, _, _ in groups:
        sequences_per_folder[where] = sequences_per_folder.get(where, 0) + 1
    studies = []
    for (where, sequence, domains), runs in sorted(groups.items()):
        shown = ", ".join(domains) if len(domains) <= 4 else ", ".join(domains[:3]) + ", ..."
        title = f"{sequence or 'sequence'} ({len(domains)} domains: {shown})"
        slug = Path(where).name if where else ""
        if sequences_per_folder[where] > 1 or not where:
            slug = "-".join(filter(None, [slug, sequence, f"{len(domains)}d", _short_hash(domains)]))
        studies.append(Study(f"{where}: {title}" if where else title, slug, _labelled(runs, warn)))
    return studies
def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return flat


def _training_keys(run: Run) -> dict:
    keys = {k: v for k, v in _flatten(run.config).items() if k.startswith(_TRAINING_PREFIXES)}
    keys.setdefault("eval.cells", json.dumps(_CELLS_BEFORE_THE_KEY))
    return keys




def _short_hash(value) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:4]


def compact_number(value: float) -> str:
    """4 significant digits, no float noise, short exponents: 0.00030000000000000003 -> 0.0003,
    2e-05 -> 2e-5, 1000000.0 -> 1e6, 8192 -> 8192."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    text = f"{value:.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def _short_values(key: str, values: list) -> list[str]:
    """The values one differing training key takes across a group, each short enough for a
    label: numbers compact, short lists spelled out, long ones by their length (and a 4-hex hash
    where two of the same length differ), a long text by its head and a hash."""
    def plain(v):
        if v is None:
            return "none"
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, (int, float)):
            return compact_number(v)
        if isinstance(v, list):
            return "[" + ",".join(plain(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ",".join(f"{k}:{plain(x)}" for k, x in v.items()) + "}"
        return str(v)

    texts = [plain(v) for v in values]
    too_long = any(len(t) > 24 for t in texts)
    out = []
    for v, text in zip(values, texts):
        if len(text) <= 24 and not (too_long and isinstance(v, list)):   # one form per key
            out.append(text)
        elif isinstance(v, list):
            unit = "domains" if key == "sequence.order" else "items"
            same_length = sum(isinstance(w, list) and len(w) == len(v) and w != v for w in values)
            out.append(f"{len(v)} {unit}" + (f" #{_short_hash(v)}" if same_length else ""))
        else:
            out.append(f"{text[:12]}…#{_short_hash(v)}")
    return out


def label_variants(runs: list[Run]) -> None:
    """Name each run's variant: the method, plus the training keys in which runs of the same
    model and method differ, e.g. ``lora (lr=0.0001)``; just the method when they agree. Keys
    are named by their last part, values kept short (``_short_values``):
    ``full_ft (order=3 domains, lr=2e-5, tokens_per_stage=4096)``."""
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
        differing.sort(key=lambda k: (not k.endswith(".lr"), k))   # the learning rate first
        shown = {k: _short_values(k, [json.loads(f[k]) if k in f else None for f in flats])
                 for k in differing}
        for i, run in enumerate(group):
            parts: dict[str, str] = {}
            options: dict[str, str] = {}
            for key in differing:
                short_key = key.rsplit(".", 1)[-1]
                value = shown[key][i] if key in flats[i] else "-"
                if parts.get(short_key) == value:   # train.lr mirrors method.lr
                    continue
                named = short_key if short_key not in parts else key
                parts[named] = value
                if key.startswith("method.options."):
                    options[named] = value
            run.variant_keys, run.option_keys = parts, options
            run.variant = _variant_label(run.method, parts)


def _variant_label(method: str, parts: dict[str, str]) -> str:
    return f"{method} ({', '.join(f'{k}={v}' for k, v in parts.items())})" if parts else method


def point_variant(run: Run) -> str:
    """The run's variant without the keys that only say which cells it scored (``SCORING_KEYS``):
    an ``eval.cells=all`` and a ``matched`` run of one learning rate are one point of a front."""
    return _variant_label(run.method, {k: v for k, v in run.variant_keys.items()
                                       if k.rsplit(".", 1)[-1] not in SCORING_KEYS})

"""The base model evaluated once per results folder: stage 0's rows, computed by the first run
and reused by every later run that would compute the same ones (``eval.reuse_base``).

Stage 0 scores the model before any training, so every run of a sweep over methods, learning
rates and seeds with the same model, data and evaluation settings computes the same stage-0
rows: 1/(T+1) of the sweep's evaluation. An evaluator that can share them says what decides them
(:meth:`gainbench.evaluation.evaluators.Evaluator.base_identity`: perplexity's validation
tokens, documents and scoring settings; lm-eval's tasks, seed, tokenizer and task files); this
module adds what decides them for every evaluator, and hashes the whole into the entry's key:

* the model: its spec (gainbench.models.ModelSpec, identity fields), parameter count, and each
  tensor's name, shape, dtype and 4,096 values spread evenly over it (a cheap guard against a
  local checkpoint replaced under the same name);
* the machine's numerics: device type, torch threads, deterministic and TF32 switches, the CUDA
  stack (gainbench.provenance.numerics), and the python, torch, transformers and numpy versions;
* the source of the code that computes the rows (the evaluator's ``sources``) and this module's
  :data:`FORMAT`, so an edit to it never reuses rows the old code computed.

An entry is ``<results_dir>/.base/<key>.json``: the raw rows (before the run columns), the
evaluator's provenance (lm-eval's task versions) and, for a reader, what the key hashed. It is
written atomically; floats round-trip bitwise (JSON's shortest repr, a NaN by its bits). A later
run with the same key takes its rows instead of evaluating: its rows.parquet is byte for byte
the one an evaluation would have written. run.json's ``base_rows`` says, per evaluator, the key
and whether the rows were reused. An entry that cannot be read, or does not hold what its name
says, is ignored with a one-line warning and written again.

Which evaluators share their stage 0: perplexity and lm-eval. The others have no base rows to
share: the column-span diagnostic copies the base weights when it is built and gives no rows at
stage 0, the model export writes nothing at stage 0, and the figure analyses write per-token
files into the run folder (a stage-0 side effect another run's entry cannot stand in for), so
they are always called. Every evaluator's ``before_stage`` still runs at stage 0, reused or not.

Only in a run of one process: under DDP or FSDP each rank scores its share of the batches, so
the ranks would have to agree on the decision and skip the same collectives; those runs evaluate
stage 0 (run.json: ``base_rows.off``).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gainbench import provenance
from gainbench.config.fields import identity
from gainbench.files import atomic_write, json_digest

FORMAT = 1          # bump when an entry's layout, or what its key hashes, changes
FOLDER = ".base"    # under results_dir, beside the run folders (kept out of git)
_SAMPLES = 4096     # values per tensor in the weights' digest
# this module's source as this process loaded it (an edit while a long sweep runs must not
# change the key of rows its loaded code writes; gainbench.evaluation.evaluators._sources)
_OWN_SOURCE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


class BaseRows:
    """Stage 0's rows of each evaluator, from ``folder`` when computed before (None: never)."""

    def __init__(self, folder: Path | None, model_spec=None, run_id: str = "", off: str = ""):
        self.folder, self.model_spec, self.run_id = folder, model_spec, run_id
        self.record: dict = {"off": off} if off else {}   # run.json's "base_rows"
        self._common: dict | None = None

    @classmethod
    def for_run(cls, settings, model, placement) -> BaseRows:
        if not settings.reuse_base:
            return cls(None, off="eval.reuse_base=false")
        if placement.ranks.world_size > 1 or placement.lockstep(model):
            return cls(None, off="more than one process: stage 0 is evaluated")
        return cls(Path(settings.results_dir) / FOLDER, settings.model, settings.run_id)

    def measure(self, evaluator, model, stage: int) -> list[dict]:
        """``evaluator(model, stage)``, or at stage 0 the rows an earlier run stored under the
        same key (the evaluator's provenance then comes from the entry too)."""
        base = evaluator.base_identity() if self.folder is not None and stage == 0 else None
        if base is None:
            return evaluator(model, stage)
        name = type(evaluator).__name__
        described = {"format": FORMAT, "evaluator": name, "settings": base, **self._shared(model)}
        key = json_digest(described)
        path = self.folder / f"{key}.json"
        entry = _read(path, key) if path.exists() else None
        if entry is not None:
            evaluator.provenance = entry["provenance"]
            self.record[name] = {"key": key, "reused": True}
            return entry["rows"]
        rows = evaluator(model, stage)
        encoded = [_encoded(r) for r in rows]
        _write(path, {"format": FORMAT, "key": key, "evaluator": name, "written_by": self.run_id,
                      "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "described": described,
                      "provenance": evaluator.provenance, "rows_sha256": _rows_digest(encoded),
                      "rows": encoded})
        self.record[name] = {"key": key, "reused": False}
        return rows

    def _shared(self, model) -> dict:
        """What decides every evaluator's stage-0 rows: the model and the numerics (computed
        once, before any stage changes the model)."""
        if self._common is None:
            versions = provenance.package_versions()
            self._common = {
                "model": identity(self.model_spec),
                "model_params": sum(p.numel() for p in model.parameters()),
                "weights": weights_digest(model),
                "device": next(model.parameters()).device.type,
                "numerics": provenance.numerics(),
                "versions": {**{k: versions[k] for k in ("python", "torch", "transformers")},
                             "numpy": np.__version__},
                "sources": _OWN_SOURCE,
            }
        return self._common


def weights_digest(model) -> str:
    """A hash of every parameter's and buffer's name, shape and dtype and of ``_SAMPLES`` values
    spread evenly over it (exact, as float64): seconds cheaper than hashing a 7B model, and a
    different checkpoint under the same name differs in them."""
    digest = hashlib.sha256()
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    with torch.no_grad():
        for name, tensor in sorted(tensors.items()):
            flat = tensor.detach().reshape(-1)
            where = spread(flat.numel(), _SAMPLES).to(flat.device)
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(flat[where].to(torch.float64).cpu().numpy().tobytes())
    return digest.hexdigest()


def spread(n: int, k: int) -> torch.Tensor:
    """``min(n, k)`` indices into ``n`` elements, evenly spread from the first to the last (in
    integers: a float32 linspace rounds past the end of a tensor of more than 2**24)."""
    k = min(n, k)
    return torch.arange(k, dtype=torch.int64) * (n - 1) // max(k - 1, 1)


# --- an entry on disk -------------------------------------------------------------------------

def _encoded(row: dict) -> dict:
    """A row as JSON values: numpy scalars as Python ones, a NaN as its bits (JSON's NaN would
    lose its sign and payload); every other float round-trips exactly through its repr."""
    out = {}
    for column, value in row.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and math.isnan(value):
            value = {"nan": struct.pack(">d", value).hex()}
        out[column] = value
    return out


def _rows_digest(encoded: list[dict]) -> str:
    return json_digest(encoded)


def _decoded(row: dict) -> dict:
    return {column: struct.unpack(">d", bytes.fromhex(value["nan"]))[0]
            if isinstance(value, dict) else value for column, value in row.items()}


def _read(path: Path, key: str) -> dict | None:
    """The entry at ``path``, or None (with a one-line warning) when it cannot be read or is
    not the entry of ``key`` (another format, or rows that differ from those written)."""
    try:
        entry = json.loads(path.read_text())
        if not (isinstance(entry, dict) and entry.get("format") == FORMAT
                and entry.get("key") == key and isinstance(entry.get("rows"), list)
                and isinstance(entry.get("provenance"), dict)
                and all(isinstance(r, dict) and {"eval_kind", "metric", "value"} <= set(r)
                        for r in entry["rows"])):
            raise ValueError("not an entry of this format and key")
        if entry.get("rows_sha256") != _rows_digest(entry["rows"]):
            raise ValueError("its rows are not the ones written")
        entry["rows"] = [_decoded(r) for r in entry["rows"]]
        return entry
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, struct.error) as err:
        _warn(f"{path} cannot be reused ({type(err).__name__}: {err}); evaluating the base "
              "model again and rewriting it")
        return None


def _write(path: Path, entry: dict) -> None:
    """Write ``entry`` atomically; a folder that cannot be written costs the reuse, not the run."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(entry, f, indent=1)   # no default=: a value JSON cannot hold is an error
            f.write("\n")
    try:
        atomic_write(path, write)
    except (OSError, TypeError, ValueError) as err:
        _warn(f"the base model's rows could not be stored in {path} ({err}); later runs will "
              "evaluate stage 0 again")


def _warn(message: str) -> None:
    print(f"gainbench: warning: {message}", file=sys.stderr)

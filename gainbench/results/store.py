"""One run's folder: ``rows.parquet`` (tidy, one measurement per row), ``run.json``
(provenance and progress) and ``stages/`` (the tensors that reproduce each finished stage).

Every write is atomic (temp file + rename). Finishing a stage writes its rows into
``rows.parquet`` together with the run.json that lists it (as the file's key-value metadata,
:data:`META_KEY`): that one rename is the moment the stage is done, so no reader (gainbench or
pandas) ever sees rows of an unfinished stage. ``rows.csv`` and ``run.json`` follow; a job killed
before they are written loses nothing, since the next run takes the record from rows.parquet.

A folder whose rows do not cover every stage its record calls finished (rows.parquet deleted or
replaced by hand) is refused, on resume, on the finished path and by the tables, never used.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gainbench.errors import GainbenchError
from gainbench.files import StageTensors, atomic_write

ROW_COLUMNS = ["run_id", "model", "method", "seed", "sequence", "stage", "stage_domain",
               "eval_kind", "eval_name", "metric", "value", "stderr", "n",
               # grid coordinates of the figure analyses (interpolation alpha; combination a, b)
               "alpha", "a", "b",
               # the validation document of a per-document row (eval_kind ppl_doc)
               "document"]


# rows.parquet's key-value metadata: the run.json written with these rows (see the module doc)
META_KEY = b"gainbench.run"


def read_record(run_dir: Path) -> dict:
    """A run folder's record: run.json, or the one stored in rows.parquet when that lists more
    finished stages (a job killed between writing the rows and run.json). {} for no run."""
    run_dir = Path(run_dir)
    meta_path, rows_path = run_dir / "run.json", run_dir / "rows.parquet"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if rows_path.exists():
        try:
            stored = (pq.read_schema(rows_path).metadata or {}).get(META_KEY)
        except Exception:  # a damaged file: read_finished_rows says so
            stored = None
        if stored:
            from_rows = json.loads(stored)
            if set(from_rows.get("finished_stages", [])) > set(meta.get("finished_stages", [])):
                return from_rows
    return meta


def read_finished_rows(run_dir: Path, meta: dict) -> pd.DataFrame:
    """The rows of the stages ``meta`` calls finished; a GainbenchError, saying how to start
    over, when rows.parquet is missing, unreadable or lacks one of those stages."""
    run_dir = Path(run_dir)
    rows_path, finished = run_dir / "rows.parquet", list(meta.get("finished_stages", []))
    fix = f"move {run_dir} away (or delete it) to start this run afresh"
    if not rows_path.exists():
        if finished:
            raise GainbenchError(f"{rows_path} cannot be read (missing, but run.json lists finished "
                                 f"stages {finished}); {fix}")
        return pd.DataFrame(columns=ROW_COLUMNS)
    try:
        rows = pd.read_parquet(rows_path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise GainbenchError(f"{rows_path} cannot be read ({err}); {fix}") from None
    missing = sorted(set(finished) - set(rows["stage"]) if "stage" in rows else finished)
    if missing:
        raise GainbenchError(f"{rows_path} cannot be read as this run's results: it holds no rows "
                             f"of finished stage(s) {missing} that run.json lists; {fix}")
    return rows[rows["stage"].isin(finished)].reset_index(drop=True)


def write_json(path: Path, data: dict) -> None:
    """``data`` as indented JSON, written atomically (run.json)."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
    atomic_write(path, write)


class RunStore:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.rows_path = self.run_dir / "rows.parquet"
        self.meta_path = self.run_dir / "run.json"

    def exists(self) -> bool:
        return self.meta_path.exists()

    def check(self, run_id: str) -> None:
        """Refuse a folder this run did not write, rather than overwrite or trust it: a run.json
        that does not parse or belongs to another run, or rows that cannot be read."""
        if not self.exists():
            return
        fix = f"move {self.run_dir} away (or delete it) to start this run afresh"
        try:
            meta = json.loads(self.meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise GainbenchError(f"{self.meta_path} is not a readable run.json ({err}); {fix}") from None
        if not isinstance(meta, dict) or meta.get("run_id") != run_id:
            found = meta.get("run_id") if isinstance(meta, dict) else type(meta).__name__
            raise GainbenchError(f"{self.meta_path} belongs to run {found!r}, not {run_id!r}; {fix}")
        read_finished_rows(self.run_dir, self.meta())

    @contextmanager
    def lock(self):
        """Hold ``<run>/.lock`` (flock, released when the process dies) while this job writes
        the folder: a second job of the same config fails at once instead of interleaving writes.
        flock is reliable on local disks and most cluster filesystems (not on every NFS mount)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / ".lock"
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise GainbenchError(f"run folder {self.run_dir} is being written by another job "
                                     f"({holder}); wait for it to finish, or run another seed or "
                                     "config") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
            handle.flush()
            # Temp files of a writer killed mid-write (never read; a full-FT stage's is a whole
            # model): no one else writes this folder now, so they can go.
            for leftover in self.run_dir.rglob(".*.tmp"):
                leftover.unlink(missing_ok=True)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def meta(self) -> dict:
        return read_record(self.run_dir) if self.exists() else {}

    def repair_record(self) -> None:
        """Rewrite run.json from the record in rows.parquet when a job was killed between the
        two writes (so a reader of run.json sees every finished stage too)."""
        if self.exists() and self.meta() != json.loads(self.meta_path.read_text()):
            write_json(self.meta_path, self.meta())

    def finished_stages(self) -> list[int]:
        return list(self.meta().get("finished_stages", []))

    def rows(self) -> pd.DataFrame:
        """The rows of every finished stage (refused when they are not all there)."""
        return read_finished_rows(self.run_dir, self.meta())

    def save_stage_state(self, stage: int, state: dict[str, torch.Tensor],
                         keep_only_latest: bool = False) -> None:
        path = self.stage_state_path(stage)
        tensors = {k: v.contiguous() for k, v in state.items()}
        atomic_write(path, lambda tmp: save_file(tensors, tmp))
        if keep_only_latest:  # a full model copy per stage would not fit on disk for 7B+
            for old in path.parent.glob("stage_*.safetensors"):
                if old != path:
                    old.unlink()

    def load_stage_state(self, stage: int) -> Mapping[str, torch.Tensor]:
        """The stage's saved tensors, each read from disk when it is looked up: replaying a
        full-model stage (full FT) on N ranks holds one tensor at a time per rank, not N copies
        of the model."""
        path = self.stage_state_path(stage)

        def unreadable(err):  # missing, truncated or not safetensors: resume cannot replay it
            return GainbenchError(f"run folder {self.run_dir}: {path.name}, which replays finished "
                                  f"stage {stage} on resume, cannot be read ({err}); the run cannot "
                                  "continue from it: move the folder away to start the run over")
        try:
            file = safe_open(path, "pt")  # reads the header only
        except Exception as err:
            raise unreadable(err) from None

        def read(name):
            try:
                return file.get_tensor(name)
            except Exception as err:
                raise unreadable(err) from None
        return StageTensors(file.keys(), read)

    def partial_stage_path(self, stage: int) -> Path:
        """In-stage checkpoint of a stage still training (gainbench.training.checkpoint)."""
        return self.run_dir / "stages" / f"partial_stage_{stage}.pt"

    def stage_state_path(self, stage: int) -> Path:
        return self.run_dir / "stages" / f"stage_{stage}.safetensors"

    def finish_stage(self, stage: int, stage_rows: list[dict], meta: dict) -> None:
        """Write the stage's rows, then mark it done in run.json (the resume point)."""
        new = pd.DataFrame(stage_rows, columns=ROW_COLUMNS)
        old = self.rows()
        rows = new if old.empty else pd.concat([old, new], ignore_index=True)
        meta = dict(meta)
        meta["finished_stages"] = sorted(set(self.finished_stages()) | {stage})
        record = json.dumps(meta, default=str).encode()

        def write_rows(tmp):  # the rows and the record that lists them: one rename
            table = pa.Table.from_pandas(rows, preserve_index=False)
            pq.write_table(table.replace_schema_metadata(
                {**(table.schema.metadata or {}), META_KEY: record}), tmp)
        atomic_write(self.rows_path, write_rows)
        atomic_write(self.run_dir / "rows.csv", lambda tmp: rows.to_csv(tmp, index=False))
        write_json(self.meta_path, meta)

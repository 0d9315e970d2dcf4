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

# rows.parquet's columns and their types, the same in every file written since rows schema 2.
# Rows schema 1 (no version mark: the committed results) had the first 13 or more of these, as
# they were added; readers take the columns a file has (gainbench.results.runs), never more.
ROW_SCHEMA = pa.schema([
    ("run_id", pa.large_string()), ("model", pa.large_string()), ("method", pa.large_string()),
    ("seed", pa.int64()), ("sequence", pa.large_string()), ("stage", pa.int64()),
    ("stage_domain", pa.large_string()), ("eval_kind", pa.large_string()),
    ("eval_name", pa.large_string()), ("metric", pa.large_string()),
    ("value", pa.float64()), ("stderr", pa.float64()), ("n", pa.int64()),
    # grid coordinates of the figure analyses (interpolation alpha; combination a, b)
    ("alpha", pa.float64()), ("a", pa.float64()), ("b", pa.float64()),
    # the validation document of a per-document row (eval_kind ppl_doc)
    ("document", pa.large_string()),
    # what trained the run, on every row, so a table of many runs needs no run.json: train.lr,
    # train.tokens_per_stage and method.options (JSON with sorted keys)
    ("lr", pa.float64()), ("tokens_per_stage", pa.int64()), ("method_options", pa.large_string()),
])
ROW_COLUMNS = ROW_SCHEMA.names
ROWS_SCHEMA_VERSION = 2   # in run.json ("rows_schema") and rows.parquet's metadata (ROWS_SCHEMA_KEY)
# the columns every row of one run holds the same value in (protocol._with_run_columns)
RUN_COLUMNS = ["run_id", "model", "method", "seed", "sequence", "lr", "tokens_per_stage",
               "method_options"]


# rows.parquet's key-value metadata: the run.json written with these rows (see the module doc),
# and the rows schema version
META_KEY = b"gainbench.run"
ROWS_SCHEMA_KEY = b"gainbench.rows_schema"


def rows_schema(meta: dict) -> int:
    """The rows schema a run folder was written with (1: before the version was recorded)."""
    return int(meta.get("rows_schema", 1))


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
        if not self.exists():
            return
        record = self.meta()  # read once: it may come from rows.parquet
        if record != json.loads(self.meta_path.read_text()):
            write_json(self.meta_path, record)

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
        new = _fixed_columns(pd.DataFrame(stage_rows))
        old = self.rows()
        if not old.empty:   # a run begun by an older gainbench: fill what is known of every row
            for column in RUN_COLUMNS:
                if column not in old and not new.empty:
                    old[column] = new[column].iloc[0]
        rows = new if old.empty else pd.concat([_fixed_columns(old), new], ignore_index=True)
        meta = dict(meta)
        meta["finished_stages"] = sorted(set(self.finished_stages()) | {stage})
        meta["rows_schema"] = ROWS_SCHEMA_VERSION
        record = json.dumps(meta, default=str).encode()

        def write_rows(tmp):  # the rows and the record that lists them: one rename
            table = pa.Table.from_pandas(rows, schema=ROW_SCHEMA, preserve_index=False)
            pq.write_table(table.replace_schema_metadata(
                {**(table.schema.metadata or {}), META_KEY: record,
                 ROWS_SCHEMA_KEY: str(ROWS_SCHEMA_VERSION).encode()}), tmp)
        atomic_write(self.rows_path, write_rows)
        atomic_write(self.run_dir / "rows.csv", lambda tmp: rows.to_csv(tmp, index=False))
        write_json(self.meta_path, meta)


def _fixed_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with exactly ROW_COLUMNS, in order (absent ones empty); a column outside them is
    a programming error, refused rather than dropped."""
    unknown = [c for c in rows.columns if c not in ROW_COLUMNS]
    if unknown:
        raise ValueError(f"row column(s) {unknown} are not in rows schema {ROWS_SCHEMA_VERSION}; "
                         "add them to gainbench.results.store.ROW_SCHEMA (and bump its version)")
    return rows.reindex(columns=ROW_COLUMNS)

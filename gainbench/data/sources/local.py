"""The user's own text files: .txt, .jsonl and .parquet, found by glob."""

import glob
import json
from pathlib import Path

from gainbench.data.sources.document import Document
from gainbench.errors import GainbenchError


def local_files(paths: str | list[str], text_field: str = "text") -> list[Document]:
    """Your own text: globs (relative to the working directory, ``**`` allowed) of .txt files
    (one document each), .jsonl (one per line, field ``text_field``) and .parquet (one per row,
    column ``text_field``). doc_ids are "local/<path>" and "local/<path>#<line or row>".
    """
    files: list[str] = []
    for pattern in [paths] if isinstance(paths, str) else paths:
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise GainbenchError(f"no file matches {pattern!r} (relative to {Path.cwd()}); fix the path "
                                 "in the config or run from the folder it is relative to")
        files += [m for m in matches if m not in files]
    docs = []
    for name in files:
        path = Path(name)
        if path.suffix == ".txt":
            try:
                docs.append(Document(f"local/{path.as_posix()}", path.read_text(encoding="utf-8")))
            except UnicodeDecodeError as err:
                raise GainbenchError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); "
                                     "convert the file to UTF-8") from None
        elif path.suffix == ".jsonl":
            docs += _read_jsonl(path, text_field)
        elif path.suffix == ".parquet":
            docs += _read_parquet(path, text_field)
        else:
            raise GainbenchError(f"{path} is not a .txt, .jsonl or .parquet file; narrow the glob "
                                 "or convert the file")
    return docs


def _read_jsonl(path: Path, field: str) -> list[Document]:
    docs = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise GainbenchError(f"{path} line {lineno} is not UTF-8 text ({err.reason} at byte "
                                     f"{err.start}); convert the file to UTF-8") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise GainbenchError(
                    f"{path} line {lineno} is not valid JSON ({err.msg}, column {err.colno}); fix "
                    "the line: JSONL holds one JSON object per line") from None
            text = record.get(field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise GainbenchError(
                    f"{path} line {lineno} has no string field {field!r} (it has: {fields}); fix "
                    "the line or set text_field to the field that holds the text")
            docs.append(Document(f"local/{path.as_posix()}#{lineno}", text))
    return docs


def _read_parquet(path: Path, field: str) -> list[Document]:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise GainbenchError(f"{path} is not a readable parquet file ({err}); rewrite it or "
                             "narrow the glob") from None
    if field not in names:
        raise GainbenchError(f"{path} has no column {field!r} (columns: {', '.join(names)}); "
                             "set text_field to the column that holds the text")
    texts = pq.read_table(path, columns=[field]).column(field).to_pylist()
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise GainbenchError(f"{path} row {row}: column {field!r} is not text ({text!r}); "
                                 "fix the row or choose another text_field")
    return [Document(f"local/{path.as_posix()}#{row}", text) for row, text in enumerate(texts)]

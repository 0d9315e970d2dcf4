"""Hugging Face datasets (the paper's corpora), on machines that reach the hub or hold its cache."""

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

from gainbench.data.sources.document import Document
from gainbench.errors import GainbenchError


def hf_dataset(path: str, name: str | None = None, split: str = "train", text_field: str = "text",
               revision: str | None = None, max_documents: int | None = 20000, streaming: bool = False,
               data_files=None, document_start: str | None = None) -> list[Document]:
    """A Hugging Face dataset, read with ``datasets.load_dataset``: a hub id (plain data files:
    parquet, json, csv; datasets>=4 refuses loading scripts) or a packaged builder such as
    "json" or "parquet" with ``data_files``.

    Licence: that of the dataset (record it in the domain's ``licence``). One document per
    record, the first ``max_documents`` (None: all) in dataset order; doc_id
    "hf/<path>/<name>/<split>/<index>". ``text_field`` holds a string or a list of strings
    (joined with blank lines). ``streaming`` reads only the records taken (large corpora such as
    PG-19); if the hub is unreachable it falls back to the local HF datasets cache, as a
    non-streaming load does.

    ``revision`` is required for a hub id: a full commit sha (40 hex digits), so the records,
    hence the documents and the validation split, are the same on every machine and every
    day. A packaged builder or a local folder reads the files it is given and needs none.

    ``document_start``: a regular expression for corpora stored one line per record. Records are
    joined (one line each) into a document until a record that matches it (``re.match``) starts
    the next one, so a validation document is a whole article, never a paragraph whose
    neighbours train. WikiText: ``"^ = [^=]"``, its " = Title = " lines (section headings are
    " = = Section = = "). A document's index is that of its first record; ``max_documents``
    counts documents; whitespace-only documents (text before the first title) are dropped.
    """
    if max_documents is not None and max_documents < 1:
        raise GainbenchError(f"hf_dataset {path!r}: max_documents must be at least 1 (or null for "
                             f"all), not {max_documents}; fix source.max_documents")
    if _is_hub_id(path) and not (isinstance(revision, str) and _COMMIT.fullmatch(revision)):
        raise GainbenchError(
            f"HF dataset {path!r} is not pinned: source.revision must be a full commit sha (40 hex "
            f"digits), got {revision!r}; on a machine with internet run `python -c \"from "
            f"huggingface_hub import HfApi; print(HfApi().dataset_info('{path}').sha)\"` and set "
            "the domain's source.revision to it")
    starts = None
    if document_start is not None:
        try:
            starts = re.compile(document_start)
        except re.error as e:
            raise GainbenchError(f"hf_dataset {path!r}: source.document_start {document_start!r} is "
                                 f"not a regular expression ({e}); fix source.document_start") from None
    import datasets

    what = f"HF dataset {path!r} (config {name!r}, split {split!r}, revision {revision or 'main'!r})"
    options = {"path": path, "name": name, "split": split, "revision": revision,
               "data_files": data_files}
    try:
        try:
            ds = datasets.load_dataset(**options, streaming=streaming)
        except ConnectionError:
            if not streaming:
                raise
            ds = datasets.load_dataset(**options)  # no hub: a filled local cache still serves it
        columns = ds.column_names  # may be None for a streamed dataset; then checked per record
        if columns is not None and text_field not in columns:
            raise _missing_field(what, text_field, columns)
        records = (_text_of(record, index, what, text_field) for index, record in enumerate(ds))
        if starts is not None:
            records = _joined(records, starts)
        return [Document(f"hf/{path}/{name}/{split}/{index}", text)
                for index, text in itertools.islice(records, max_documents)]
    except (ConnectionError, FileNotFoundError) as e:
        if not isinstance(e, (ConnectionError, datasets.exceptions.DatasetNotFoundError)):
            raise GainbenchError(f"{what}: {e}; fix source.path or source.data_files (relative "
                                 f"to {Path.cwd()})") from None
        files = "" if data_files is None else f", data_files={data_files!r}"
        call = f"datasets.load_dataset({path!r}, {name!r}, split={split!r}, revision={revision!r}{files})"
        raise GainbenchError(
            f"cannot load {what}: not on the hub (unreachable, unknown or gated) nor in the local HF "
            f"cache {datasets.config.HF_DATASETS_CACHE} ({type(e).__name__}: {e}); on a machine with "
            "internet run `python scripts/prepare_data.py <this run's overrides>` (or "
            f"`python -c \"import datasets; {call}\"`) and copy its HF_HOME here, or point the "
            "domain at local files with source.kind=local_files (or hf_dataset with path: parquet "
            "and data_files)") from None
    except (RuntimeError, ValueError) as e:
        if "scripts are no longer supported" in str(e):
            raise GainbenchError(f"{what} uses a loading script, which datasets>=4 refuses; use a "
                                 "parquet mirror or revision: refs/convert/parquet") from None
        if "Unknown split" in str(e):
            raise GainbenchError(f"{what}: {e}; fix source.split") from None
        raise


_COMMIT = re.compile(r"[0-9a-f]{40}")


def _is_hub_id(path: str) -> bool:
    """``owner/name`` on the hub, not a packaged builder ("json", "parquet") or a local folder."""
    return "/" in path and not Path(path).exists()


def _text_of(record, index: int, what: str, field: str) -> tuple[int, str]:
    if field not in record:
        raise _missing_field(what, field, list(record))
    return index, _record_text(record[field], what, field, index)


def _joined(records: Iterator[tuple[int, str]], starts: re.Pattern) -> Iterator[tuple[int, str]]:
    """Consecutive records joined into documents, a new one at each record ``starts`` matches."""
    first, lines = None, []
    for index, text in records:
        if starts.match(text) and lines:
            if "".join(lines).strip():
                yield first, "\n".join(lines)
            lines = []
        if not lines:
            first = index
        lines.append(text.removesuffix("\n"))
    if lines and "".join(lines).strip():
        yield first, "\n".join(lines)


def _missing_field(what: str, field: str, columns) -> GainbenchError:
    return GainbenchError(f"{what} has no column {field!r} (columns: {', '.join(columns)}); "
                          "set source.text_field to the column that holds the text")


def _record_text(value, what: str, field: str, index: int) -> str:
    if value is None:
        return ""  # dropped by the domain's min_chars
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return "\n\n".join(value)
    raise GainbenchError(f"{what} record {index}: column {field!r} holds {type(value).__name__}, "
                         "not text or a list of texts; set source.text_field to a text column")

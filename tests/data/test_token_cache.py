"""The token cache: a second preparation tokenises nothing and gives bit-identical data; the key
separates everything that changes the blocks; writes are atomic; damage is survived."""

import dataclasses
import os

import pytest
import torch

from gainbench.errors import GainbenchError

from gainbench.data import token_cache
from gainbench.data.domains import PLAIN, DataRules, DomainSpec, prepare_domain
from gainbench.data.sources import Document
from gainbench.models.tiny import train_byte_bpe
from tests.conftest import SAMPLE_TEXT
from tests.data.tokenizer_calls import count_tokenizer_calls

DOCS = [Document(f"doc/{i}", f"document number {i} " * (5 + i % 7)) for i in range(400)]
SPEC = DomainSpec(name="d", source={"kind": "local_files", "paths": "d/*.jsonl"})
ARGS = dict(block_len=16, train_tokens=256, val_tokens=64)


def _prepare(tokenizer, spec=SPEC, docs=DOCS, **overrides):
    return prepare_domain(spec, tokenizer, docs=docs, **{**ARGS, **overrides})


def _assert_same(a, b):
    for name in ("train_blocks", "val_blocks", "val_doc_index"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype == torch.long and torch.equal(x, y), name
    assert (a.name, a.val_bytes, a.val_stream_bytes, a.info, a.val_doc_ids, a.blocks_per_stage) == (
        b.name, b.val_bytes, b.val_stream_bytes, b.info, b.val_doc_ids, b.blocks_per_stage)


# issue 15's defaults at this test's scale: capped validation documents, a pool, the screen
RULES = DataRules(val_doc_tokens=6, val_min_documents=8, pool_factor=3, dedup_words=4,
                  dedup_max_containment=0.15)


def test_second_preparation_tokenises_nothing_and_is_bit_identical(tiny_tokenizer, monkeypatch,
                                                                   private_token_cache):
    calls = count_tokenizer_calls(monkeypatch)
    first = _prepare(tiny_tokenizer)
    assert calls and not first.from_cache
    assert len(list(private_token_cache.glob("*.safetensors"))) == 1
    calls.clear()
    second = _prepare(tiny_tokenizer, docs=list(reversed(DOCS)))  # order of reading is irrelevant
    assert calls == [] and second.from_cache
    _assert_same(first, second)

    monkeypatch.setenv(token_cache.ENV_SWITCH, "0")
    fresh = _prepare(tiny_tokenizer)
    assert calls and not fresh.from_cache
    _assert_same(fresh, second)
    assert len(list(private_token_cache.iterdir())) == 1  # the switch also stops writes


def test_an_equal_tokenizer_built_again_shares_entries_a_different_one_does_not(tiny_tokenizer):
    again = train_byte_bpe([SAMPLE_TEXT], vocab_size=300)
    other = train_byte_bpe([SAMPLE_TEXT], vocab_size=280)
    assert token_cache.tokenizer_fingerprint(again) == token_cache.tokenizer_fingerprint(tiny_tokenizer)
    assert token_cache.tokenizer_fingerprint(other) != token_cache.tokenizer_fingerprint(tiny_tokenizer)
    _prepare(tiny_tokenizer)
    assert _prepare(again).from_cache
    assert not _prepare(other).from_cache


@pytest.mark.parametrize("change", [
    dict(block_len=8), dict(train_tokens=128), dict(val_tokens=32),
    dict(spec=dataclasses.replace(SPEC, validation_percent=20.0)),
    dict(spec=dataclasses.replace(SPEC, min_chars=2)),
    dict(spec=dataclasses.replace(SPEC, source={"kind": "local_files", "paths": "e/*.jsonl"})),
    dict(spec=dataclasses.replace(SPEC, val_tokens=32)),
    dict(docs=DOCS[:-1] + [Document(DOCS[-1].doc_id, "edited text " * 9)]),
    dict(rules=dataclasses.replace(PLAIN, val_doc_tokens=6)),
    dict(rules=dataclasses.replace(PLAIN, pool_factor=2)),
    dict(rules=dataclasses.replace(PLAIN, dedup_max_containment=0.5)),
    dict(rules=dataclasses.replace(RULES, dedup_words=5)),
    dict(rules=dataclasses.replace(RULES, dedup_max_containment=0.5)),
])
def test_anything_that_changes_the_blocks_is_a_new_entry(tiny_tokenizer, change):
    _prepare(tiny_tokenizer)
    assert not _prepare(tiny_tokenizer, **change).from_cache
    assert _prepare(tiny_tokenizer, **change).from_cache


def test_description_and_licence_are_not_in_the_key(tiny_tokenizer):
    _prepare(tiny_tokenizer)
    renamed = dataclasses.replace(SPEC, name="other", licence="CC0", description="same text")
    data = _prepare(tiny_tokenizer, spec=renamed)
    assert data.from_cache and data.name == "other" and data.info["licence"] == "CC0"


def test_writes_are_atomic_and_a_damaged_entry_is_rewritten(tiny_tokenizer, private_token_cache,
                                                            capsys):
    reference = _prepare(tiny_tokenizer)
    (entry,) = private_token_cache.iterdir()
    assert not entry.name.startswith(".tmp-") and oct(entry.stat().st_mode & 0o777) == "0o644"
    entry.write_bytes(entry.read_bytes()[:40])  # as a crash mid-write would leave a non-atomic file
    again = _prepare(tiny_tokenizer)
    assert not again.from_cache and "ignoring unreadable token cache entry" in capsys.readouterr().err
    _assert_same(reference, again)
    assert _prepare(tiny_tokenizer).from_cache
    assert [p.name for p in private_token_cache.iterdir()] == [entry.name]  # no temp files left


def test_an_unwritable_cache_costs_only_the_tokenising(tiny_tokenizer, monkeypatch, tmp_path, capsys):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    monkeypatch.setattr(token_cache, "folder", lambda: blocked / "tokenized")
    data = _prepare(tiny_tokenizer)
    assert len(data.val_blocks) == 4 and "could not write the token cache" in capsys.readouterr().err


def test_slow_tokenizers_are_not_cached(tiny_tokenizer, private_token_cache):
    class Slow:  # no backend_tokenizer: nothing describes it completely
        eos_token_id = tiny_tokenizer.eos_token_id

        def __call__(self, *args, **kwargs):
            return tiny_tokenizer(*args, **kwargs)

        def decode(self, *args, **kwargs):
            return tiny_tokenizer.decode(*args, **kwargs)

    assert token_cache.tokenizer_fingerprint(Slow()) is None
    assert not _prepare(Slow()).from_cache and not any(private_token_cache.iterdir())


def test_switch_values(monkeypatch):
    for value, on in (("0", False), ("false", False), ("OFF", False), ("no", False), ("1", True),
                      ("", True)):
        monkeypatch.setenv(token_cache.ENV_SWITCH, value)
        assert token_cache.enabled() is on, value
    monkeypatch.delenv(token_cache.ENV_SWITCH)
    assert token_cache.enabled()


def test_default_folder_is_under_the_gainbench_cache(monkeypatch, tmp_path):
    monkeypatch.undo()  # the autouse fixture's private folder
    monkeypatch.setenv("GAINBENCH_CACHE", str(tmp_path))
    assert token_cache.folder() == tmp_path / "tokenized"
    assert os.fspath(token_cache.folder()).startswith(os.fspath(tmp_path))


def test_the_document_trace_the_pool_and_the_screen_come_back_from_the_cache(tiny_tokenizer,
                                                                           monkeypatch):
    # validation documents that training documents quote, so the screen drops some
    docs = DOCS + [Document(f"quote/{d.doc_id}", d.text + " and more words") for d in DOCS[:200]]
    first = _prepare(tiny_tokenizer, docs=docs, rules=RULES)
    assert first.info["near_duplicates"]["dropped_train_documents"] > 0
    assert len(first.val_doc_ids) >= 8 and len(first.train_blocks) == 3 * first.blocks_per_stage
    calls = count_tokenizer_calls(monkeypatch)
    again = _prepare(tiny_tokenizer, docs=docs, rules=RULES)
    assert again.from_cache and calls == []
    _assert_same(first, again)


def test_the_minimum_of_validation_documents_only_checks_so_it_shares_the_entry(tiny_tokenizer):
    _prepare(tiny_tokenizer, rules=RULES)
    assert _prepare(tiny_tokenizer, rules=dataclasses.replace(RULES, val_min_documents=1)).from_cache
    whole = dataclasses.replace(RULES, val_doc_tokens=None, val_min_documents=1)
    assert len(_prepare(tiny_tokenizer, rules=whole).val_doc_ids) == 1   # 64 tokens: one document
    with pytest.raises(GainbenchError, match="validation tokens come from 1 of its"):  # on a hit too
        _prepare(tiny_tokenizer, rules=dataclasses.replace(whole, val_min_documents=2))


def test_an_entry_of_the_format_before_is_not_read(tiny_tokenizer, private_token_cache, monkeypatch):
    _prepare(tiny_tokenizer)
    (old,) = private_token_cache.iterdir()
    monkeypatch.setattr(token_cache, "FORMAT", token_cache.FORMAT + 1)
    assert not _prepare(tiny_tokenizer).from_cache       # another key: a fresh entry
    assert len(list(private_token_cache.iterdir())) == 2
    assert token_cache.load(old.stem) is None           # and the format in the file is checked

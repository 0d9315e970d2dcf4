"""Document splits never leak and are stable; packing and budgets are exact."""

import pytest
import torch

from gainbench.data.domains import (DomainSpec, pack_documents, predicted_bytes, prepare_domain,
                                    split_documents)
from gainbench.data.sources import Document
from gainbench.errors import GainbenchError

DOCS = [Document(f"doc/{i}", f"document number {i} " * (5 + i % 7)) for i in range(400)]


def test_split_is_disjoint_stable_and_independent_of_input_order():
    train, val = split_documents(DOCS, 10)
    assert {d.doc_id for d in train}.isdisjoint({d.doc_id for d in val})
    assert len(train) + len(val) == len(DOCS)
    assert 20 <= len(val) <= 60  # about 10%
    train2, val2 = split_documents(list(reversed(DOCS)), 10)
    assert val2 == val and train2 == train


def test_validation_set_does_not_change_when_documents_are_added():
    _, val = split_documents(DOCS, 10)
    more = DOCS + [Document(f"new/{i}", "extra text") for i in range(100)]
    _, val_more = split_documents(more, 10)
    assert {d.doc_id for d in val} <= {d.doc_id for d in val_more}


def test_packing_joins_documents_with_eos_and_respects_the_budget(tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    blocks = pack_documents(DOCS[:50], tiny_tokenizer, block_len=16, max_tokens=100)
    assert blocks.shape == (6, 16)  # 100 // 16 whole blocks
    first = tiny_tokenizer(DOCS[0].text, add_special_tokens=False)["input_ids"]
    flat = blocks.flatten().tolist()
    assert flat[: len(first)] == first and flat[len(first)] == eos


def test_predicted_bytes_skips_each_blocks_first_token(tiny_tokenizer):
    ids = tiny_tokenizer("abc def ghi jkl", add_special_tokens=False)["input_ids"]
    blocks = torch.tensor([ids])
    assert predicted_bytes(blocks, tiny_tokenizer) == len(
        tiny_tokenizer.decode(ids[1:]).encode("utf-8"))


def test_prepare_domain_is_deterministic_and_fingerprinted(tiny_tokenizer):
    spec = DomainSpec(name="d", source={"kind": "local_files"})
    a = prepare_domain(spec, tiny_tokenizer, 16, 256, 64, docs=DOCS)
    b = prepare_domain(spec, tiny_tokenizer, 16, 256, 64, docs=list(reversed(DOCS)))
    assert torch.equal(a.val_blocks, b.val_blocks) and torch.equal(a.train_blocks, b.train_blocks)
    assert a.info["val_fingerprint"] == b.info["val_fingerprint"]
    assert a.train_blocks.shape == (16, 16) and a.val_blocks.shape == (4, 16)


def test_empty_domain_is_a_clear_error(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    spec = DomainSpec(name="legal", source={"kind": "local_files",
                                            "paths": str(tmp_path / "*.txt")})
    from gainbench.data.domains import read_documents
    with pytest.raises(GainbenchError, match="domain 'legal' is empty"):
        read_documents(spec)


def test_too_little_validation_text_is_a_clear_error(tiny_tokenizer):
    spec = DomainSpec(name="small", source={"kind": "local_files"}, validation_percent=0.0)
    with pytest.raises(GainbenchError, match="too little validation text"):
        prepare_domain(spec, tiny_tokenizer, 16, 64, 64, docs=DOCS[:20])

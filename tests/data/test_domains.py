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


def test_no_validation_document_is_a_clear_error(tiny_tokenizer):
    spec = DomainSpec(name="small", source={"kind": "local_files"}, validation_percent=0.0)
    with pytest.raises(GainbenchError, match="no validation document.*raise sequence.domains.small"):
        prepare_domain(spec, tiny_tokenizer, 16, 64, 64, docs=DOCS[:20])


def test_too_little_validation_text_for_the_budget_says_how_much_there_is(tiny_tokenizer):
    # 4 whole validation blocks of 16 exist (see above): a budget of 5 blocks is refused.
    spec = DomainSpec(name="small", source={"kind": "local_files"})
    with pytest.raises(GainbenchError) as err:
        prepare_domain(spec, tiny_tokenizer, 16, 256, 16 * 500, docs=DOCS)
    message = str(err.value)
    assert "\n" not in message
    for needed in ("domain 'small' has too little validation text", "for a validation budget of 8000",
                   "validation_percent=10", "sequence.domains.small.validation_percent",
                   "eval.val_tokens"):
        assert needed in message, needed


def test_train_text_that_runs_out_is_a_note_not_an_error(tiny_tokenizer, capsys):
    spec = DomainSpec(name="short", source={"kind": "local_files"})
    data = prepare_domain(spec, tiny_tokenizer, 16, 10**6, 64, docs=DOCS)
    assert 0 < data.info["train_tokens"] < 10**6
    assert data.info["note"] == f"train text ran out: {data.info['train_tokens']} of 1000000 budgeted tokens"
    assert "domain 'short': train text ran out" in capsys.readouterr().err
    # a budget that is not a whole number of blocks is not "running out"
    assert "note" not in prepare_domain(spec, tiny_tokenizer, 16, 250, 64, docs=DOCS).info


def test_per_domain_budgets_replace_the_sequence_wide_ones(tiny_tokenizer):
    default = DomainSpec(name="d", source={"kind": "local_files"})
    assert default.train_tokens is None and default.val_tokens is None
    assert default.budgets(256, 64) == (256, 64)
    own = DomainSpec(name="d", source={"kind": "local_files"}, train_tokens=128, val_tokens=32)
    assert own.budgets(256, 64) == (128, 32)
    data = prepare_domain(own, tiny_tokenizer, 16, 256, 64, docs=DOCS)
    assert data.train_blocks.shape == (8, 16) and data.val_blocks.shape == (2, 16)
    base = prepare_domain(default, tiny_tokenizer, 16, 256, 64, docs=DOCS)
    assert torch.equal(data.val_blocks, base.val_blocks[:2])  # a prefix of the same stream
    only_train = DomainSpec(name="d", source={"kind": "local_files"}, train_tokens=32)
    assert only_train.budgets(256, 64) == (32, 64)


@pytest.mark.parametrize("value", [-1, 1.5, "many", True])
def test_bad_per_domain_budget_is_a_clear_error(value):
    with pytest.raises(GainbenchError, match=r"domain 'd': train_tokens must be a whole number >= 0.*"
                                             r"sequence\.domains\.d\.train_tokens"):
        DomainSpec(name="d", source={"kind": "local_files"}, train_tokens=value)


def test_per_domain_budgets_come_from_the_config_and_are_absent_by_default():
    from gainbench.settings import settings_from_config, to_container
    from tests.conftest import compose_config

    for sequence in ("embedded8", "paper8"):
        config = to_container(compose_config([f"sequence={sequence}"]))
        for domain in config["sequence"]["domains"].values():
            # null (the sequence-wide budget) by default, which leaves run ids where they were
            assert domain["train_tokens"] is None and domain["val_tokens"] is None
    settings = settings_from_config(compose_config([
        "sequence.domains.kjv_bible.train_tokens=2048", "sequence.domains.kjv_bible.val_tokens=512"]))
    by_name = {d.name: d for d in settings.domains}
    assert by_name["kjv_bible"].budgets(settings.train_tokens, settings.val_tokens) == (2048, 512)
    assert by_name["icd10_medical"].budgets(settings.train_tokens, settings.val_tokens) == (
        settings.train_tokens, settings.val_tokens)


def test_a_reader_error_names_the_domain(tmp_path):
    from gainbench.data.domains import read_documents

    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    spec = DomainSpec(name="legal", source={"kind": "local_files", "paths": str(tmp_path / "*.jsonl")})
    with pytest.raises(GainbenchError, match=r"^domain 'legal': .*bad\.jsonl line 2 is not valid JSON"):
        read_documents(spec)
    (tmp_path / "bad.jsonl").write_text('{"body": "no text field"}\n')
    with pytest.raises(GainbenchError, match=r"^domain 'legal': .*line 1 has no string field 'text'"):
        read_documents(spec)
    with pytest.raises(GainbenchError, match=r"domain 'legal': its source has no 'kind'; set "
                                             r"sequence\.domains\.legal\.source\.kind"):
        read_documents(DomainSpec(name="legal", source={"paths": "x"}))


# --- validation from many documents, traced; a training pool a seed draws from (issue 15) -----

def _rules(**changes):
    from gainbench.data.domains import PLAIN
    import dataclasses

    return dataclasses.replace(PLAIN, **changes)


def test_plain_rules_pack_as_before_these_settings_existed(tiny_tokenizer):
    spec = DomainSpec(name="d", source={"kind": "local_files"})
    data = prepare_domain(spec, tiny_tokenizer, 16, 256, 64, docs=DOCS)
    train_docs, val_docs = split_documents(DOCS, 10)
    assert torch.equal(data.train_blocks, pack_documents(train_docs, tiny_tokenizer, 16, 256))
    assert torch.equal(data.val_blocks, pack_documents(val_docs, tiny_tokenizer, 16, 64))
    assert data.blocks_per_stage == len(data.train_blocks) == 16
    assert data.stage_blocks(seed=7) is data.train_blocks  # the pool is one stage: all of it


def test_every_validation_token_is_traced_to_its_document(tiny_tokenizer):
    spec = DomainSpec(name="d", source={"kind": "local_files"})
    data = prepare_domain(spec, tiny_tokenizer, 16, 256, 160, docs=DOCS,
                          rules=_rules(val_doc_tokens=12))
    _, val_docs = split_documents(DOCS, 10)
    index, ids = data.val_doc_index, data.val_doc_ids
    assert index.shape == data.val_blocks.shape and index.dtype == torch.long
    assert ids == tuple(d.doc_id for d in val_docs[:len(ids)])   # the split's hash order
    assert index.flatten().tolist() == sorted(index.flatten().tolist())
    assert set(index.flatten().tolist()) == set(range(len(ids)))
    by_id = {d.doc_id: d for d in val_docs}
    flat, owners = data.val_blocks.flatten(), index.flatten()
    eos = tiny_tokenizer.eos_token_id
    for k, doc_id in enumerate(ids):
        tokens = flat[owners == k].tolist()
        first = tiny_tokenizer(by_id[doc_id].text, add_special_tokens=False)["input_ids"][:12]
        if k < len(ids) - 1:     # whole: its first 12 tokens, then its EOS
            assert tokens == first + [eos]
        else:                    # the last may be cut by the block edge
            assert tokens == (first + [eos])[:len(tokens)]
    assert data.info["val_documents"] == len(ids) >= 160 // 13
    assert data.info["val_doc_tokens"] == 12


def test_a_hand_made_domain_is_one_validation_document():
    from gainbench.data.domains import DomainData

    blocks = torch.arange(32).view(2, 16)
    data = DomainData("x", train_blocks=blocks, val_blocks=blocks, val_bytes=0)
    assert data.val_doc_ids == ("x",) and torch.equal(data.val_doc_index, torch.zeros_like(blocks))


def test_a_seed_draws_which_blocks_a_stage_trains_on_from_the_pool(tiny_tokenizer):
    spec = DomainSpec(name="d", source={"kind": "local_files"})
    data = prepare_domain(spec, tiny_tokenizer, 16, 128, 64, docs=DOCS, rules=_rules(pool_factor=4))
    assert data.train_blocks.shape == (32, 16) and data.blocks_per_stage == 8
    assert data.info["train_tokens"] == 128 and data.info["train_pool_tokens"] == 512
    # the pool's start is the stage a pool factor of 1 trains on
    plain = prepare_domain(spec, tiny_tokenizer, 16, 128, 64, docs=DOCS)
    assert torch.equal(plain.train_blocks, data.train_blocks[:8])

    from gainbench.data.domains import DomainData

    pool = torch.arange(32).view(32, 1).repeat(1, 16)   # block i is all i's
    numbered = DomainData("d", pool, data.val_blocks, 0, blocks_per_stage=8)

    def drawn(seed):
        blocks = numbered.stage_blocks(seed)
        assert blocks.shape == (8, 16)
        picked = blocks[:, 0].tolist()
        assert picked == sorted(set(picked))   # no repeats, in pool order (the loop shuffles)
        return frozenset(picked)

    assert drawn(1) == drawn(1)                              # a seed fixes the draw
    draws = [drawn(seed) for seed in range(8)]
    assert len(set(draws)) == 8                              # seeds draw different text
    assert len(frozenset.union(*draws)) > 24                 # and reach most of the pool


def test_a_pool_larger_than_the_domain_stops_at_its_text(tiny_tokenizer, capsys):
    spec = DomainSpec(name="d", source={"kind": "local_files"})
    data = prepare_domain(spec, tiny_tokenizer, 16, 2**16, 64, docs=DOCS, rules=_rules(pool_factor=8))
    assert data.info["train_pool_tokens"] == data.info["train_tokens"] < 2**16  # all of it, one stage
    assert torch.equal(data.stage_blocks(3), data.train_blocks)
    assert "ran out" in data.info["note"] and "ran out" in capsys.readouterr().err
    assert "note" not in prepare_domain(spec, tiny_tokenizer, 16, 256, 64, docs=DOCS,
                                        rules=_rules(pool_factor=10**4)).info  # a stage is full


def test_too_few_validation_documents_is_a_one_line_error_naming_the_fix(tiny_tokenizer):
    spec = DomainSpec(name="small", source={"kind": "local_files"})
    docs = [Document(f"d{i}", "word " * 200) for i in range(200)]
    n_val = len(split_documents(docs, 10)[1])
    with pytest.raises(GainbenchError) as err:
        prepare_domain(spec, tiny_tokenizer, 16, 64, 256, docs=docs,
                       rules=_rules(val_doc_tokens=8, val_min_documents=n_val + 1))
    message = str(err.value)
    assert "\n" not in message
    for needed in (f"domain 'small' has {n_val} validation documents, fewer than the {n_val + 1}",
                   "eval.val_min_documents", "raise sequence.domains.small.validation_percent (now 10)"):
        assert needed in message, needed
    # a budget that holds fewer capped documents than the minimum needs only those
    data = prepare_domain(spec, tiny_tokenizer, 16, 64, 32, docs=docs,
                          rules=_rules(val_doc_tokens=8, val_min_documents=n_val + 1))
    assert len(data.val_doc_ids) == 4   # 32 tokens of 9 per document


def test_whole_documents_that_fill_the_budget_alone_are_refused_with_the_cap_to_set(tiny_tokenizer):
    spec = DomainSpec(name="long", source={"kind": "local_files"})
    docs = [Document(f"d{i}", "word " * 200) for i in range(200)]
    with pytest.raises(GainbenchError) as err:
        prepare_domain(spec, tiny_tokenizer, 16, 64, 256, docs=docs,
                       rules=_rules(val_min_documents=4))
    message = str(err.value)
    assert "\n" not in message
    for needed in ("domain 'long': its 256 validation tokens come from 1 of its",
                   "fewer than eval.val_min_documents=4", "set eval.val_doc_tokens <= 63 (null: whole "
                   "documents)", "or lower eval.val_min_documents"):
        assert needed in message, needed
    data = prepare_domain(spec, tiny_tokenizer, 16, 64, 256, docs=docs,
                          rules=_rules(val_doc_tokens=63, val_min_documents=4))
    assert len(data.val_doc_ids) == 4


def test_a_cap_that_leaves_too_little_validation_text_says_so(tiny_tokenizer):
    spec = DomainSpec(name="small", source={"kind": "local_files"})
    with pytest.raises(GainbenchError, match=r"has too little validation text: .*documents, at most 4 "
                                             r"tokens each \(eval.val_doc_tokens\),"):
        prepare_domain(spec, tiny_tokenizer, 16, 256, 512, docs=DOCS, rules=_rules(val_doc_tokens=4))

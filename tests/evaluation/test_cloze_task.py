"""gb_cloze_embedded: deterministic, held-out, balanced, and runnable through lm-eval offline."""

import collections
import re
import socket

import pytest

from gainbench.data.domains import read_documents, split_documents
from gainbench.evaluation.lm_eval_bridge import run_lm_eval
from gainbench.evaluation.tasks.cloze import N_CHOICES, build_items, load_cloze, sequence_domains
from gainbench.models.tiny import build_tiny_model, train_byte_bpe


@pytest.fixture(scope="module")
def items():
    return load_cloze()["validation"].to_list()


@pytest.fixture(scope="module")
def splits():
    """Per domain: ({validation doc_id: text}, {train doc_ids})."""
    out = {}
    for spec in sequence_domains("embedded8"):
        train, val = split_documents(read_documents(spec), spec.validation_percent)
        out[spec.name] = ({d.doc_id: d.text for d in val}, {d.doc_id for d in train})
    return out


def test_deterministic_across_calls(items):
    build_items.cache_clear()  # rebuilt from the documents, not served from the cache
    assert load_cloze()["validation"].to_list() == items


def test_counts_and_domains(items):
    domains = [s.name for s in sequence_domains("embedded8")]
    assert len(domains) == 8
    assert collections.Counter(i["domain"] for i in items) == {d: 20 for d in domains}


def test_passages_come_from_validation_docs_only(items, splits):
    for item in items:
        val, train = splits[item["domain"]]
        assert item["doc_id"] in val and item["doc_id"] not in train
        # The context and its true continuation are consecutive text of that document.
        gold = item["choices"][item["answer"]]
        pattern = re.escape(item["context"]) + r"\s+" + re.escape(gold)
        assert re.search(pattern, val[item["doc_id"]])


def test_every_choice_is_held_out_text_of_the_same_domain(items, splits):
    for item in items:
        val, _ = splits[item["domain"]]
        for choice in item["choices"]:
            assert any(choice in text for text in val.values())


def test_gold_position_balanced_per_domain(items):
    by_domain = collections.defaultdict(collections.Counter)
    for item in items:
        by_domain[item["domain"]][item["answer"]] += 1
    for counts in by_domain.values():
        assert counts == {slot: 20 // N_CHOICES for slot in range(N_CHOICES)}


def test_choices_distinct_and_same_length(items):
    for item in items:
        assert len(item["choices"]) == N_CHOICES
        assert len({" ".join(c.split()) for c in item["choices"]}) == N_CHOICES
        assert {len(c.split()) for c in item["choices"]} == {12}  # length is no cue
        assert len(item["context"].split()) == 48
        assert all(c == c.strip() for c in item["choices"])


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the cloze task tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_runs_through_lm_eval(items, no_network):
    tokenizer = train_byte_bpe([i["context"] + " " + " ".join(i["choices"]) for i in items], vocab_size=400)
    arch = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 1024}
    model = build_tiny_model(arch, tokenizer, init_seed=0)
    rows, prov = run_lm_eval(model, tokenizer, ["gb_cloze_embedded"], limit=8, batch_size=16)
    assert {(r["eval_name"], r["metric"]) for r in rows} == {
        ("gb_cloze_embedded", "acc"), ("gb_cloze_embedded", "acc_norm")}
    assert all(0.0 <= r["value"] <= 1.0 and r["n"] == 8 for r in rows)
    assert prov["n_shot"] == {"gb_cloze_embedded": 0}

"""The near-duplicate screen: containment of a validation document's word shingles in a training
document, boilerplate left out; on the real pydoc pair the issue found leaking."""

import numpy as np
import pytest

from gainbench.data.dedup import (BOILERPLATE_DOCUMENTS, NearDuplicate, Shingler, containment,
                                  screen_training)
from gainbench.data.domains import DataRules, DomainSpec, prepare_domain, split_documents
from gainbench.data.sources import Document
from gainbench.data.sources.embedded import pydoc_topics

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega").split()


def _text(seed: int, n: int = 60) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, n))


def test_shingles_are_word_runs_that_ignore_case_and_punctuation_and_are_stable():
    shingle = Shingler(3)
    a = shingle("One two, three four!")
    assert len(a) == 2 and a.dtype == np.uint64 and np.all(np.diff(a.astype(np.float64)) > 0)
    assert np.array_equal(shingle("one   TWO three\nfour"), a)
    assert len(shingle("too short")) == 0
    assert np.array_equal(Shingler(3)("x y z w"), Shingler(3)("x y z w"))  # a fresh vocabulary too
    with pytest.raises(ValueError):
        Shingler(0)


def test_containment_is_the_share_of_the_inner_document_s_shingles():
    inner = _text(1)
    assert containment(inner, inner, 12) == 1.0
    assert containment(inner, _text(2) + " " + inner + " " + _text(3), 12) == 1.0
    half = " ".join(inner.split()[:30])
    assert containment(inner, half, 12) == pytest.approx(19 / 49)  # 19 of its 49 runs
    assert containment(half, inner, 12) == 1.0                     # asymmetric on purpose
    assert containment(inner, _text(4), 12) == 0.0
    assert containment("three words only", inner, 12) == 0.0      # no shingle: never matched


def test_the_screen_drops_training_documents_that_hold_a_validation_document():
    val = [Document("v/0", _text(10)), Document("v/1", _text(11))]
    train = [Document("t/quote", _text(20) + " " + val[1].text),      # holds all of v/1
             Document("t/clean", _text(21)),
             Document("t/some", " ".join(val[0].text.split()[:18]) + " " + _text(22))]  # 7 of 49
    kept, dropped = screen_training(train, val, words=12, max_containment=0.15)
    assert [d.doc_id for d in kept] == ["t/clean", "t/some"]
    assert dropped == [NearDuplicate("t/quote", "v/1", 1.0)]
    kept, dropped = screen_training(train, val, words=12, max_containment=0.1)
    assert [d.doc_id for d in kept] == ["t/clean"]
    assert dropped[1] == NearDuplicate("t/some", "v/0", pytest.approx(7 / 49))
    assert screen_training(train, [], 12, 0.15) == (train, [])


def test_boilerplate_in_many_training_documents_is_no_duplicate():
    header = "licensed under the apache license version two you may not use this file except " \
             "in compliance with the license"
    val = [Document("v/init", header + " import os")]   # a validation file that is mostly header
    train = [Document(f"t/{i}", header + " " + _text(100 + i)) for i in range(BOILERPLATE_DOCUMENTS + 1)]
    kept, dropped = screen_training(train, val, words=12, max_containment=0.15)
    assert dropped == [] and kept == train
    # the same header in fewer documents is one document's text: those are dropped
    kept, dropped = screen_training(train[:3], val, words=12, max_containment=0.15)
    assert kept == [] and len(dropped) == 3


@pytest.fixture(scope="module")
def pydoc():
    return {d.doc_id: d for d in pydoc_topics()}


def test_the_real_pydoc_pair_the_issue_found_is_a_duplicate(pydoc):
    """``specialnames`` (the whole "Special method names" chapter) holds the validation topic
    ``numeric-types`` word for word (the issue measured 99.4%)."""
    inner, outer = pydoc["pydoc/numeric-types"].text, pydoc["pydoc/specialnames"].text
    assert containment(inner, outer, 12) > 0.99
    others = [pydoc[k] for k in ("pydoc/if", "pydoc/while", "pydoc/specialnames", "pydoc/lambda")]
    kept, dropped = screen_training(others, [pydoc["pydoc/numeric-types"]], 12, 0.15)
    assert [d.train_id for d in dropped] == ["pydoc/specialnames"]
    assert [d.doc_id for d in kept] == ["pydoc/if", "pydoc/while", "pydoc/lambda"]


def test_preparing_python_docs_drops_specialnames_and_counts_it(pydoc, tiny_tokenizer):
    spec = DomainSpec(name="python_docs", source={"kind": "pydoc_topics"}, validation_percent=35.0)
    docs = list(pydoc.values())
    train, val = split_documents(docs, spec.validation_percent)
    assert "pydoc/numeric-types" in {d.doc_id for d in val}
    assert "pydoc/specialnames" in {d.doc_id for d in train}
    rules = DataRules(val_doc_tokens=64, val_min_documents=16, pool_factor=1, dedup_words=12,
                      dedup_max_containment=0.15)
    data = prepare_domain(spec, tiny_tokenizer, 64, 1024, 1024, docs=docs, rules=rules)
    screen = data.info["near_duplicates"]
    assert "pydoc/specialnames" in [train_id for train_id, _, _ in screen["dropped"]]
    assert screen["dropped_train_documents"] == len(screen["dropped"]) >= 1
    assert data.info["documents"]["train"] == len(train) - screen["dropped_train_documents"]
    assert (screen["shingle_words"], screen["max_containment"]) == (12, 0.15)
    # without the screen it is trained on
    plain = prepare_domain(spec, tiny_tokenizer, 64, 1024, 1024, docs=docs,
                           rules=DataRules(64, 16, 1, 12, None))
    assert "near_duplicates" not in plain.info and plain.info["documents"]["train"] == len(train)

"""The default data settings on the real embedded8 domains: every domain gives a validation set
of at least eval.val_min_documents documents at eval.val_doc_tokens each, a training pool of
train.pool_factor stage budgets, and a near-duplicate screen that removes the pairs found."""

import pytest

from gainbench.data.domains import prepare_domain, read_documents
from gainbench.data.packing import tokenizer_training_texts
from gainbench.models.loading import load_tokenizer
from gainbench.settings import settings_from_config
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def embedded8():
    # the default budgets (seq_len 256, 1024 validation and 8192 train tokens) with the tiny
    # model's BPE, fitted on the fly as a run fits it
    settings = settings_from_config(compose_config(["model=tiny-llama"]))
    documents = {spec.name: read_documents(spec) for spec in settings.domains}
    tokenizer = load_tokenizer(settings.model, lambda: tokenizer_training_texts(
        settings.domains, lambda spec: documents[spec.name]))
    prepared = {spec.name: prepare_domain(spec, tokenizer, settings.seq_len, settings.train_tokens,
                                          settings.val_tokens, documents[spec.name],
                                          rules=settings.data_rules)
                for spec in settings.domains}
    return settings, prepared


@pytest.mark.slow
def test_every_embedded8_domain_meets_the_default_data_settings(embedded8):
    settings, prepared = embedded8
    rules = settings.data_rules
    assert (rules.val_doc_tokens, rules.val_min_documents, rules.pool_factor) == (64, 16, 4)
    assert len(prepared) == 8
    for name, data in prepared.items():
        info = data.info
        assert info["val_tokens"] == settings.val_tokens, name
        assert info["val_documents"] == len(data.val_doc_ids) >= 16, name
        assert info["train_tokens"] == settings.train_tokens, name
        assert info["train_pool_tokens"] == 4 * settings.train_tokens, name
        per_document = data.val_doc_index.flatten().bincount()
        assert int(per_document.max()) <= 64 + 1, name   # its first 64 tokens and its EOS
    dropped = {name: [train_id for train_id, _, _ in data.info["near_duplicates"]["dropped"]]
               for name, data in prepared.items()}
    assert "pydoc/specialnames" in dropped["python_docs"]
    assert "kjv/2 Kings/19" in dropped["kjv_bible"]          # holds 52% of Isaiah 37
    assert "pysrc/networkx-3.3/networkx/readwrite/sparse6.py" in dropped["python_code"]
    assert dropped["wiki_history"] == [] and dropped["icd10_medical"] == []

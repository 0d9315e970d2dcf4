"""Per-document NLL sums: the same pass, each predicted token charged to its own document, and the
pooled total untouched."""

import pytest
import torch

from gainbench.evaluation.perplexity import strided_nll, token_nll, validation_nll


@pytest.fixture
def blocks_and_documents(tiny_tokenizer):
    torch.manual_seed(0)
    blocks = torch.randint(0, 300, (6, 16))
    # three documents packed across block boundaries: 30, 40 and 26 tokens
    docs = torch.repeat_interleave(torch.arange(3), torch.tensor([30, 40, 26])).view(6, 16)
    return blocks, docs


def test_document_sums_add_up_to_the_pooled_total_and_match_by_hand(tiny_model, blocks_and_documents):
    blocks, docs = blocks_and_documents
    plain = validation_nll(tiny_model, blocks, 100, batch_size=4)
    result = validation_nll(tiny_model, blocks, 100, batch_size=4, doc_index=docs, n_docs=3)
    assert result.total_nll == plain.total_nll and plain.doc_nll is None  # pooled: bitwise as before
    assert result.doc_tokens.tolist() == [28, 37, 25]  # not the first token of each block (0, 16, ..., 80)
    with torch.no_grad():
        nll = token_nll(tiny_model.eval(), blocks).double()
    by_hand = [float(nll[docs[:, 1:] == d].sum()) for d in range(3)]
    assert result.doc_nll.tolist() == pytest.approx(by_hand, rel=1e-12)
    assert result.doc_nll.sum() == pytest.approx(result.total_nll, rel=1e-12)


@pytest.mark.parametrize("batch_size", [1, 5])
def test_document_sums_do_not_depend_on_batching(tiny_model, blocks_and_documents, batch_size):
    blocks, docs = blocks_and_documents
    reference = validation_nll(tiny_model, blocks, 100, batch_size=6, doc_index=docs, n_docs=3)
    result = validation_nll(tiny_model, blocks, 100, batch_size=batch_size, doc_index=docs, n_docs=3)
    assert result.doc_tokens.tolist() == reference.doc_tokens.tolist()
    assert result.doc_nll.tolist() == pytest.approx(reference.doc_nll.tolist(), rel=1e-12)


def test_strided_document_sums_charge_each_scored_token_once(tiny_model, blocks_and_documents):
    blocks, docs = blocks_and_documents
    tokens, stream = blocks.flatten(), docs.flatten()
    result = strided_nll(tiny_model, tokens, 100, context=16, stride=8, batch_size=3,
                         doc_index=stream, n_docs=3)
    assert result.doc_tokens.tolist() == [29, 40, 26]  # every token but the very first
    assert result.doc_nll.sum() == pytest.approx(result.total_nll, rel=1e-12)
    plain = strided_nll(tiny_model, tokens, 100, context=16, stride=8, batch_size=3)
    assert result.total_nll == plain.total_nll


def test_a_diverged_model_s_perplexity_is_infinite_not_an_overflow():
    import math

    from gainbench.evaluation.perplexity import PooledNLL

    assert PooledNLL(total_nll=800.0 * 10, n_tokens=10, n_bytes=5).ppl == math.inf
    assert PooledNLL(total_nll=20.0, n_tokens=10, n_bytes=5).ppl == pytest.approx(math.exp(2.0))

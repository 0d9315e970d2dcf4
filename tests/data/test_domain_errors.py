"""A domain whose documents cannot fill both sides of the split says why (the split is by whole
document) and gives a fix that does not point back at the problem."""

import pytest

from gainbench.data.domains import DomainSpec, prepare_domain
from gainbench.data.sources import Document
from gainbench.errors import GainbenchError


def _prepare(docs, validation_percent=10.0):
    spec = DomainSpec(name="mine", source={"kind": "local_files"},
                      validation_percent=validation_percent)
    return prepare_domain(spec, tokenizer=None, block_len=8, train_tokens=64, val_tokens=16,
                          docs=docs)


def test_one_file_is_one_document_and_the_error_says_so():
    with pytest.raises(GainbenchError, match=r"no (training|validation) document.*1 document\(s\)"
                                             r".*a local text file is one document") as err:
        _prepare([Document("only.txt", "word " * 500)])
    assert "validation_percent" not in str(err.value)  # no setting can split one document


@pytest.mark.parametrize("percent, side, fix", [(0.0, "validation", "raise"),
                                                (100.0, "training", "lower")])
def test_several_documents_on_one_side_point_at_validation_percent_the_right_way(percent, side, fix):
    docs = [Document(f"d{i}", "word " * 100) for i in range(5)]
    with pytest.raises(GainbenchError, match=f"no {side} document.*{fix} "
                                             r"sequence.domains.mine.validation_percent \(now"):
        _prepare(docs, validation_percent=percent)

"""Count every call into a (transformers) tokenizer: encode, __call__, decode, batch_decode."""

from transformers import PreTrainedTokenizerBase

ENTRY_POINTS = ("__call__", "encode", "decode", "batch_decode")


def count_tokenizer_calls(monkeypatch) -> list[str]:
    """Patch the entry points of every HF tokenizer class for one test; returns the log of
    calls (one method name per call), which the test inspects."""
    calls: list[str] = []
    for name in ENTRY_POINTS:
        original = getattr(PreTrainedTokenizerBase, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(PreTrainedTokenizerBase, name, counted)
    return calls

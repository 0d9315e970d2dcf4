"""A domain: documents from a source, split into train and validation by document, tokenised
and packed into fixed-length blocks under a token budget.

Splits never leak: a document goes to validation when ``sha256(doc_id)`` falls in the
validation fraction, so the split depends only on the document's id, not on the run, the
seed, the method or the order sources return documents in. Validation blocks are therefore
identical across methods, stages, seeds and reruns for one tokenizer.

Budgets are the sequence-wide ``train.tokens_per_stage`` / ``eval.val_tokens`` unless a domain
sets its own ``train_tokens`` / ``val_tokens``. Packed domains are cached on disk
(gainbench.data.token_cache), so a rerun tokenises nothing. Bad data (no document, a bad file,
too little validation text for the budget) raises GainbenchError naming the domain; the
protocol prepares every domain before stage 0, so that happens before any training.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from gainbench.data import token_cache
from gainbench.data.sources import Document, load_documents
from gainbench.errors import GainbenchError


@dataclass(frozen=True)
class DomainSpec:
    """One entry of ``sequence.domains`` in the config.

    ``train_tokens`` / ``val_tokens``, when set, replace the sequence-wide budgets
    (``train.tokens_per_stage`` / ``eval.val_tokens``) for this domain only; None (the default)
    leaves them out of the run id, so ids made before they existed do not change. Set them with
    ``sequence.domains.<name>.train_tokens=N``. ``min_chars`` drops documents shorter than that
    many characters before the split.
    """

    name: str = field(metadata={"from_key": True})  # the entry's key in sequence.domains
    source: dict  # {"kind": ..., **reader options}
    # Field metadata: each field's part in the run id (gainbench/config/fields.py).
    licence: str = field(default="unknown", metadata={"neutral": "unknown"})
    description: str = field(default="", metadata={"neutral": ""})
    validation_percent: float = field(default=10.0, metadata={"neutral": 10.0, "min": 0, "max": 100})
    min_chars: int = field(default=1, metadata={"neutral": 1, "min": 0})
    train_tokens: int | None = field(default=None, metadata={"neutral": None})
    val_tokens: int | None = field(default=None, metadata={"neutral": None})

    def __post_init__(self):
        for key in ("train_tokens", "val_tokens"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise GainbenchError(f"domain '{self.name}': {key} must be a whole number >= 0, "
                                     f"got {value!r}; fix sequence.domains.{self.name}.{key}")

    def budgets(self, train_tokens: int, val_tokens: int) -> tuple[int, int]:
        """This domain's (train, validation) token budgets, given the sequence-wide ones."""
        return (train_tokens if self.train_tokens is None else int(self.train_tokens),
                val_tokens if self.val_tokens is None else int(self.val_tokens))


@dataclass
class DomainData:
    name: str
    train_blocks: torch.Tensor   # [n_train, block_len] token ids
    val_blocks: torch.Tensor     # [n_val, block_len] token ids
    val_bytes: int               # UTF-8 bytes of the predicted validation tokens (for bits per byte)
    info: dict = field(default_factory=dict)  # provenance for run.json
    val_stream_bytes: int = 0    # the same when the blocks are scored as one stream (strided PPL)
    from_cache: bool = False     # read from the token cache (not in info: results must not differ)


def _unit_interval(doc_id: str) -> float:
    return int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big") / 2**64


def split_documents(docs: list[Document], validation_percent: float
                    ) -> tuple[list[Document], list[Document]]:
    """Hash-based document split, returned in hash order (a fixed shuffle)."""
    ordered = sorted(docs, key=lambda d: _unit_interval("order/" + d.doc_id))
    cut = validation_percent / 100
    val = [d for d in ordered if _unit_interval(d.doc_id) < cut]
    train = [d for d in ordered if _unit_interval(d.doc_id) >= cut]
    return train, val


# A tiny model's BPE is fitted to this many training documents of each domain (never to
# validation text); the protocol and scripts/prepare_data.py both use tokenizer_training_texts,
# so they reach the same token-cache entries.
TOKENIZER_DOCUMENTS = 200


def tokenizer_training_texts(specs, documents_of) -> Iterator[str]:
    """The text a tokenizer fitted on the fly learns from: the first
    :data:`TOKENIZER_DOCUMENTS` training documents of each domain in ``specs``, in order.
    ``documents_of(spec)`` returns the domain's documents."""
    for spec in specs:
        train_docs, _ = split_documents(documents_of(spec), spec.validation_percent)
        yield from (d.text for d in train_docs[:TOKENIZER_DOCUMENTS])


def pack_documents(docs: list[Document], tokenizer, block_len: int, max_tokens: int,
                   chunk: int = 64) -> torch.Tensor:
    """Tokenise documents in order, join them with EOS, cut into ``[n, block_len]`` blocks.

    Stops once ``max_tokens`` are collected (rounded down to whole blocks), tokenising only
    as many documents as that needs. The last partial block is dropped.

    Batches of ``chunk`` documents go to the tokenizer in one call, which a fast tokenizer may
    spread over threads when ``TOKENIZERS_PARALLELISM`` is not "false" (``python -m gainbench``
    sets it to "false"; export it as "true" to override). It is left off: on the 2-core machine
    this was written on, turning it on made tokenising no faster (0.96-0.99x, SmolLM2's tokenizer;
    benchmarks/data_throughput.py). The ids are the same either way.
    """
    eos = tokenizer.eos_token_id
    want = (max_tokens // block_len) * block_len
    if want == 0:
        return torch.zeros(0, block_len, dtype=torch.long)
    stream: list[int] = []
    for start in range(0, len(docs), chunk):
        texts = [d.text for d in docs[start:start + chunk]]
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.append(eos)
        if len(stream) >= want:
            break
    n_blocks = min(len(stream), want) // block_len
    return torch.tensor(stream[: n_blocks * block_len], dtype=torch.long).view(n_blocks, block_len)


def predicted_bytes(blocks: torch.Tensor, tokenizer) -> int:
    """UTF-8 bytes of the tokens a model predicts (each block but its first token).

    Approximate where a byte-level token splits a multi-byte character at a block edge.
    """
    return sum(len(tokenizer.decode(row[1:].tolist()).encode("utf-8")) for row in blocks)


def read_documents(spec: DomainSpec) -> list[Document]:
    """The domain's documents of at least ``min_chars`` characters.

    A reader's error (bad file, missing field, unreachable dataset) comes back naming the domain.
    """
    options = dict(spec.source)
    kind = options.pop("kind", None)
    if kind is None:
        raise GainbenchError(f"domain '{spec.name}': its source has no 'kind'; "
                             f"set sequence.domains.{spec.name}.source.kind")
    try:
        docs = [d for d in load_documents(kind, **options) if len(d.text) >= spec.min_chars]
    except GainbenchError as err:
        raise GainbenchError(f"domain '{spec.name}': {err}") from None
    if not docs:
        raise GainbenchError(f"domain '{spec.name}' is empty: its source {spec.source} gave no "
                             f"document of at least {spec.min_chars} characters; check the path, "
                             "text field or filter")
    return docs


def prepare_domain(spec: DomainSpec, tokenizer, block_len: int, train_tokens: int,
                   val_tokens: int, docs: list[Document] | None = None) -> DomainData:
    """Split, tokenise and pack one domain, through the token cache (gainbench.data.token_cache).

    ``train_tokens`` / ``val_tokens`` are the sequence-wide budgets; the spec's own, if set,
    replace them. Errors (GainbenchError), raised before any training:

    * no document, or too little train text for one block;
    * less validation text than the validation budget: every stage must score the same, full
      set of validation tokens, so a short validation split is refused, not silently shrunk.

    Train text that runs out before the train budget is *not* an error: the domain trains on
    what it has, and ``info["note"]`` (in run.json) and a line on stderr say how much that was.
    """
    train_budget, val_budget = spec.budgets(train_tokens, val_tokens)
    docs = read_documents(spec) if docs is None else docs
    train_docs, val_docs = split_documents(docs, spec.validation_percent)
    key = (token_cache.entry_key(tokenizer, spec, train_docs, val_docs, block_len, train_budget,
                                 val_budget) if token_cache.enabled() else None)
    packed = token_cache.load(key) if key else None
    from_cache = packed is not None
    if packed is None:
        packed = _pack_domain(spec, tokenizer, train_docs, val_docs, block_len, train_budget,
                              val_budget)
        if key:
            token_cache.store(key, packed, about={
                "domain": spec.name, "tokenizer": getattr(tokenizer, "name_or_path", "")})
    info = {
        "source": dict(spec.source), "licence": spec.licence, "description": spec.description,
        "documents": {"train": packed.train_documents, "validation": packed.val_documents},
        "train_tokens": int(packed.train_blocks.numel()),
        "val_tokens": int(packed.val_blocks.numel()),
        "val_fingerprint": hashlib.sha256(packed.val_blocks.numpy().tobytes()).hexdigest()[:16],
    }
    if packed.train_blocks.numel() < (train_budget // block_len) * block_len:
        info["note"] = (f"train text ran out: {packed.train_blocks.numel()} of {train_budget} "
                        "budgeted tokens")
        print(f"gainbench: note: domain '{spec.name}': {info['note']}", file=sys.stderr)
    return DomainData(spec.name, packed.train_blocks, packed.val_blocks, packed.val_bytes, info,
                      val_stream_bytes=packed.val_stream_bytes, from_cache=from_cache)


def _check_both_sides(spec: DomainSpec, train_docs: list, val_docs: list, train_budget: int,
                      val_budget: int) -> None:
    """The split is by whole document: a domain needs documents on both sides of it."""
    empty = [side for side, docs, budget in (("training", train_docs, train_budget),
                                             ("validation", val_docs, val_budget))
             if budget > 0 and not docs]
    if not empty:
        return
    n = len(train_docs) + len(val_docs)
    fix = ("split its text into several documents (a local text file is one document; a .jsonl "
           "file holds one per line)")
    if n >= 2:
        more = "raise" if empty[0] == "validation" else "lower"
        fix = (f"{more} sequence.domains.{spec.name}.validation_percent (now "
               f"{spec.validation_percent:g}) or " + fix)
    raise GainbenchError(f"domain '{spec.name}' has no {empty[0]} document: the split into training "
                         f"and validation is by whole document and its {n} document(s) all fell on "
                         f"one side; {fix}")


def _pack_domain(spec: DomainSpec, tokenizer, train_docs: list[Document],
                 val_docs: list[Document], block_len: int, train_budget: int,
                 val_budget: int) -> token_cache.PackedDomain:
    _check_both_sides(spec, train_docs, val_docs, train_budget, val_budget)
    train = pack_documents(train_docs, tokenizer, block_len, train_budget)
    if len(train) == 0 and train_budget > 0:
        raise GainbenchError(
            f"domain '{spec.name}' has too little train text for one block of {block_len} tokens "
            f"({len(train_docs)} documents); add text, lower "
            f"sequence.domains.{spec.name}.validation_percent, or lower train.seq_len")
    val = pack_documents(val_docs, tokenizer, block_len, val_budget)
    wanted = (val_budget // block_len) * block_len
    if val.numel() < wanted:
        raise GainbenchError(
            f"domain '{spec.name}' has too little validation text: {val.numel()} tokens in whole "
            f"blocks of {block_len} ({len(val_docs)} documents, validation_percent="
            f"{spec.validation_percent:g}) for a validation budget of {val_budget}; raise "
            f"sequence.domains.{spec.name}.validation_percent, add text, or lower eval.val_tokens "
            f"(or +sequence.domains.{spec.name}.val_tokens)")
    return token_cache.PackedDomain(
        train, val, predicted_bytes(val, tokenizer), predicted_bytes(val.view(1, -1), tokenizer),
        train_documents=len(train_docs), val_documents=len(val_docs))

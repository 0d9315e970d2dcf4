"""A domain: documents from a source, split into train and validation by document, tokenised
and packed into fixed-length blocks under a token budget.

Splits never leak: a document goes to validation when ``sha256(doc_id)`` falls in the
validation fraction, so the split depends only on the document's id, not on the run, the
seed, the method or the order sources return documents in. Validation blocks are therefore
identical across methods, stages, seeds and reruns for one tokenizer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from gainbench.data.sources import Document, load_documents
from gainbench.errors import GainbenchError


@dataclass(frozen=True)
class DomainSpec:
    """One entry of ``sequence.domains`` in the config."""

    name: str
    source: dict  # {"kind": ..., **reader options}
    licence: str = "unknown"
    description: str = ""
    validation_percent: float = 10.0
    min_chars: int = 1


@dataclass
class DomainData:
    name: str
    train_blocks: torch.Tensor   # [n_train, block_len] token ids
    val_blocks: torch.Tensor     # [n_val, block_len] token ids
    val_bytes: int               # UTF-8 bytes of the predicted validation tokens (for bits per byte)
    info: dict = field(default_factory=dict)  # provenance for run.json
    val_stream_bytes: int = 0    # the same when the blocks are scored as one stream (strided PPL)


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


def pack_documents(docs: list[Document], tokenizer, block_len: int, max_tokens: int,
                   chunk: int = 64) -> torch.Tensor:
    """Tokenise documents in order, join them with EOS, cut into ``[n, block_len]`` blocks.

    Stops once ``max_tokens`` are collected (rounded down to whole blocks), tokenising only
    as many documents as that needs. The last partial block is dropped.
    """
    eos = tokenizer.eos_token_id
    want = (max_tokens // block_len) * block_len
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
    options = dict(spec.source)
    kind = options.pop("kind", None)
    if kind is None:
        raise GainbenchError(f"domain '{spec.name}': its source has no 'kind'; "
                             "set sequence.domains.{spec.name}.source.kind")
    docs = [d for d in load_documents(kind, **options) if len(d.text) >= spec.min_chars]
    if not docs:
        raise GainbenchError(f"domain '{spec.name}' is empty: its source {spec.source} gave no "
                             f"document of at least {spec.min_chars} characters; check the path, "
                             "text field or filter")
    return docs


def prepare_domain(spec: DomainSpec, tokenizer, block_len: int, train_tokens: int,
                   val_tokens: int, docs: list[Document] | None = None) -> DomainData:
    docs = read_documents(spec) if docs is None else docs
    train_docs, val_docs = split_documents(docs, spec.validation_percent)
    train = pack_documents(train_docs, tokenizer, block_len, train_tokens)
    val = pack_documents(val_docs, tokenizer, block_len, val_tokens)
    for split, blocks, budget in (("train", train, train_tokens), ("validation", val, val_tokens)):
        if len(blocks) == 0 and budget > 0:
            raise GainbenchError(
                f"domain '{spec.name}' has too little {split} text for one block of {block_len} "
                f"tokens ({len(train_docs if split == 'train' else val_docs)} documents); add text, "
                "raise validation_percent, or lower train.seq_len")
    info = {
        "source": dict(spec.source), "licence": spec.licence, "description": spec.description,
        "documents": {"train": len(train_docs), "validation": len(val_docs)},
        "train_tokens": int(train.numel()), "val_tokens": int(val.numel()),
        "val_fingerprint": hashlib.sha256(val.numpy().tobytes()).hexdigest()[:16],
    }
    if train.numel() < train_tokens:
        info["note"] = f"train text ran out: {train.numel()} of {train_tokens} budgeted tokens"
    return DomainData(spec.name, train, val, predicted_bytes(val, tokenizer), info,
                      val_stream_bytes=predicted_bytes(val.view(1, -1), tokenizer))

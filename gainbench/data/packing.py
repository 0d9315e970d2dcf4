"""Splitting documents into training and validation, and packing them into fixed-length blocks
of token ids (each validation token traced to its document). Pure functions of documents and a
tokenizer; gainbench.data.domains applies them to a domain under its budgets and rules.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import torch

from gainbench.data.sources import Document


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
    return pack_traced(docs, tokenizer, block_len, max_tokens, chunk=chunk)[0]


def pack_traced(docs: list[Document], tokenizer, block_len: int, max_tokens: int,
                doc_tokens: int | None = None, chunk: int = 64
                ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """:func:`pack_documents`, keeping at most the first ``doc_tokens`` tokens of each document
    (None: all), and tracing each token to its document: returns ``(blocks, doc_index,
    doc_ids)``, ``doc_index`` of ``blocks``' shape indexing ``doc_ids`` (the documents that gave
    a token, in order; a document's EOS separator is its own)."""
    eos = tokenizer.eos_token_id
    want = (max_tokens // block_len) * block_len
    if doc_tokens is not None:  # tokenise about as many documents as the budget can use
        chunk = max(1, min(chunk, math.ceil(want / (doc_tokens + 1))))
    stream: list[int] = []
    owner: list[int] = []
    used = 0
    for start in range(0, len(docs) if want else 0, chunk):
        texts = [d.text for d in docs[start:start + chunk]]
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            ids = ids[:doc_tokens] if doc_tokens is not None else ids
            stream.extend(ids)
            stream.append(eos)
            owner.extend([used] * (len(ids) + 1))
            used += 1
            if len(stream) >= want:
                break
        if len(stream) >= want:
            break
    n_blocks = min(len(stream), want) // block_len
    kept = n_blocks * block_len
    blocks = torch.tensor(stream[:kept], dtype=torch.long).view(n_blocks, block_len)
    index = torch.tensor(owner[:kept], dtype=torch.long).view(n_blocks, block_len)
    n_docs = owner[kept - 1] + 1 if kept else 0
    return blocks, index, tuple(d.doc_id for d in docs[:n_docs])


def predicted_bytes(blocks: torch.Tensor, tokenizer) -> int:
    """UTF-8 bytes of the tokens a model predicts (each block but its first token).

    Approximate where a byte-level token splits a multi-byte character at a block edge.
    """
    return sum(len(tokenizer.decode(row[1:].tolist()).encode("utf-8")) for row in blocks)

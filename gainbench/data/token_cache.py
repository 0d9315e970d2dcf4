"""On-disk cache of tokenised, packed domains: a second run of the same sequence tokenises nothing.

One entry per (tokenizer, domain, block length, budgets, packing rules): a safetensors file
under ``cache_dir()/"tokenized"`` (``$GAINBENCH_CACHE/tokenized``) holding the train pool, the
validation blocks and the validation tokens' document index (int32 on disk, int64 in memory: the
same ids) and, as metadata, everything else :class:`~gainbench.data.domains.DomainData` needs
(validation bytes, document counts and ids, the training documents the near-duplicate screen
dropped), so a run's rows and ``run.json`` are identical with and without the cache.

The key is a SHA-256 of:

* the tokenizer's *content*, not its name: the backend's JSON (vocabulary, merges, normaliser,
  pre-tokeniser, decoder, added tokens; its padding/truncation state is left out, since every
  call sets it), the Python class, the EOS id, the decode clean-up flag, and the tokenizers and
  transformers versions. A hub id and a local copy of it share entries; two tokenizers that
  differ anywhere never do. Slow (pure Python) tokenizers have no such description and are
  not cached.
* the domain: its source options, ``min_chars``, ``validation_percent``, and a hash of its
  documents' ids and texts, so an edited local file behind the same glob is tokenised again;
* the block length, the domain's train pool and validation token budgets, and the packing
  rules that change the blocks (validation tokens per document, the near-duplicate screen).

Writes go to a temporary file in the same folder and are renamed into place (``atomic_write``):
concurrent jobs see a whole entry or none. An entry that cannot be read counts as absent and
is rewritten; a folder that cannot be written (a read-only shared cache) only costs the
tokenising. The folder can be deleted at any time.

``GAINBENCH_TOKEN_CACHE=0`` (or ``false``/``off``/``no``) turns the cache off: no reads, no writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gainbench.files import atomic_write, json_digest
from gainbench.paths import cache_dir

ENV_SWITCH = "GAINBENCH_TOKEN_CACHE"
FORMAT = 2  # bump when the entry layout or the packing changes: old entries are then ignored
# 2: the validation document index and ids, the pool, the near-duplicate screen's drops

_fingerprints: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@dataclass
class PackedDomain:
    """What tokenising a domain produces; the rest of DomainData is derived from it and the spec."""

    train_blocks: torch.Tensor
    val_blocks: torch.Tensor
    val_bytes: int
    val_stream_bytes: int
    train_documents: int
    val_documents: int
    val_doc_index: torch.Tensor          # val_blocks' shape: index into val_doc_ids
    val_doc_ids: tuple[str, ...]         # the validation documents that gave tokens, in order
    dropped: list = field(default_factory=list)  # (train id, val id, containment) screened out


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "off", "no")


def folder() -> Path:
    return cache_dir() / "tokenized"


def tokenizer_fingerprint(tokenizer) -> str | None:
    """A hash of everything that decides the token ids and decoded bytes, or None when the
    tokenizer cannot be described (a slow tokenizer: not cached). Memoised per tokenizer
    object, since serialising a 150K-token vocabulary takes a few hundred milliseconds."""
    try:
        return _fingerprints[tokenizer]
    except (KeyError, TypeError):
        pass
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    import tokenizers
    import transformers

    description = json.loads(backend.to_str())
    description.pop("padding", None)     # call-time settings, not the tokenizer
    description.pop("truncation", None)
    identity = {
        "backend": json_digest(description),
        "class": type(tokenizer).__name__,
        "eos_token_id": tokenizer.eos_token_id,
        "clean_up_tokenization_spaces": getattr(tokenizer, "clean_up_tokenization_spaces", None),
        "versions": [tokenizers.__version__, transformers.__version__],
    }
    fingerprint = json_digest(identity)
    try:
        _fingerprints[tokenizer] = fingerprint
    except TypeError:  # not weak-referenceable: recompute next time
        pass
    return fingerprint


def documents_fingerprint(train_docs, val_docs) -> str:
    """A hash of both splits' ids and texts, in split order (itself fixed by the ids)."""
    digest = hashlib.sha256()
    for split in (train_docs, val_docs):
        digest.update(b"\x00split\x00")
        for doc in split:
            for part in (doc.doc_id, doc.text):
                data = part.encode("utf-8", errors="surrogatepass")
                digest.update(len(data).to_bytes(8, "little"))
                digest.update(data)
    return digest.hexdigest()


def entry_key(tokenizer, spec, train_docs, val_docs, block_len: int, train_tokens: int,
              val_tokens: int, packing: dict | None = None) -> str | None:
    """The entry's name, or None when this tokenizer is not cacheable. ``train_tokens`` is the
    pool's budget; ``packing``, the rules that change the blocks (plain JSON values)."""
    tokenizer_id = tokenizer_fingerprint(tokenizer)
    if tokenizer_id is None:
        return None
    identity = {
        "format": FORMAT, "tokenizer": tokenizer_id,
        "domain": {"source": spec.source, "min_chars": spec.min_chars,
                   "validation_percent": spec.validation_percent},
        "documents": documents_fingerprint(train_docs, val_docs),
        "block_len": block_len, "train_tokens": train_tokens, "val_tokens": val_tokens,
        "packing": packing or {},
    }
    return json_digest(identity)


def load(key: str) -> PackedDomain | None:
    """The cached entry, or None if absent or unreadable."""
    from safetensors import safe_open

    path = folder() / f"{key}.safetensors"
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["gainbench"])
            if meta.get("format") != FORMAT:
                return None
            train, val = f.get_tensor("train"), f.get_tensor("val")
            val_doc_index = f.get_tensor("val_doc_index")
        if val_doc_index.shape != val.shape:
            raise ValueError("validation document index does not match the blocks")
        return PackedDomain(train.long(), val.long(), int(meta["val_bytes"]),
                            int(meta["val_stream_bytes"]), int(meta["train_documents"]),
                            int(meta["val_documents"]), val_doc_index.long(),
                            tuple(meta["val_doc_ids"]), [tuple(d) for d in meta["dropped"]])
    except Exception as err:  # noqa: BLE001 - any damage means "not cached"; it is rewritten
        print(f"gainbench: ignoring unreadable token cache entry {path} ({type(err).__name__})",
              file=sys.stderr)
        return None


def store(key: str, packed: PackedDomain, about: dict) -> None:
    """Write an entry atomically; ``about`` (domain name, tokenizer name) is for people only."""
    from safetensors.torch import save

    meta = {"format": FORMAT, "val_bytes": packed.val_bytes,
            "val_stream_bytes": packed.val_stream_bytes,
            "train_documents": packed.train_documents, "val_documents": packed.val_documents,
            "val_doc_ids": list(packed.val_doc_ids), "dropped": [list(d) for d in packed.dropped],
            "about": about}
    tensors = {"train": _compact(packed.train_blocks), "val": _compact(packed.val_blocks),
               "val_doc_index": _compact(packed.val_doc_index)}
    target = folder()
    data = save(tensors, metadata={"gainbench": json.dumps(meta, sort_keys=True)})
    try:
        atomic_write(target / f"{key}.safetensors", lambda tmp: Path(tmp).write_bytes(data))
    except OSError as err:  # read-only or full cache: the run goes on, uncached
        print(f"gainbench: could not write the token cache in {target} ({err}); set "
              f"{ENV_SWITCH}=0 to stop trying", file=sys.stderr)


def _compact(blocks: torch.Tensor) -> torch.Tensor:
    # int32 halves the files; token ids always fit (vocabularies are far below 2**31)
    if blocks.numel() and int(blocks.max()) >= 2**31:
        return blocks.contiguous()
    return blocks.to(torch.int32).contiguous()


"""A domain: documents from a source, split into train and validation by document, tokenised
and packed into fixed-length blocks under a token budget.

Splits never leak: a document goes to validation when ``sha256(doc_id)`` falls in the
validation fraction, so the split depends only on the document's id, not on the run, the
seed, the method or the order sources return documents in. Validation blocks are therefore
identical across methods, stages, seeds and reruns for one tokenizer.

Budgets are the sequence-wide ``train.tokens_per_stage`` / ``eval.val_tokens`` unless a domain
sets its own ``train_tokens`` / ``val_tokens``. Beyond the budgets, :class:`DataRules` (from the
config: gainbench/config/schema.py holds the defaults) says how the text becomes blocks:

* validation: the first ``val_doc_tokens`` tokens of each validation document, in the split's
  fixed hash order, until the budget is full, from at least ``val_min_documents`` documents; each
  validation token records the document it came from (``DomainData.val_doc_index``), so any
  statistic can resample documents;
* training: a *pool* of up to ``pool_factor`` stage budgets of training text, from which each
  stage draws its budget with the stage's seed (:meth:`DomainData.stage_blocks`): a seed changes
  which text trains, not only its order;
* clean splits: training documents that contain a validation document (word-shingle containment,
  gainbench.data.dedup) are dropped before packing, and counted in ``info``.

Packed domains are cached on disk (gainbench.data.token_cache), so a rerun tokenises nothing. Bad
data (no document, a bad file, too little validation text or too few validation documents) raises
GainbenchError naming the domain; the protocol prepares every domain before stage 0, so that
happens before any training.
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass, field

import torch

from gainbench.data import dedup, token_cache
from gainbench.data.packing import (pack_documents, pack_traced, predicted_bytes,  # noqa: F401
                                    split_documents)
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


@dataclass(frozen=True)
class DataRules:
    """How a domain's text becomes blocks, beyond its budgets (``eval.val_doc_tokens``,
    ``eval.val_min_documents``, ``train.pool_factor``, ``eval.val_dedup``; their defaults live in
    gainbench/config/schema.py). :data:`PLAIN` packs as runs did before these settings existed:
    whole validation documents, a pool of one stage budget, no screening."""

    val_doc_tokens: int | None       # the first N tokens of each validation document; None: all
    val_min_documents: int           # validation tokens come from at least this many documents
    pool_factor: int                 # the training pool holds up to this many stage budgets
    dedup_words: int                 # shingle length of the near-duplicate screen
    dedup_max_containment: float | None  # drop training documents at or above it; None: no screen

    def required_val_documents(self, val_budget: int, block_len: int) -> int:
        """Documents the validation set must come from: ``val_min_documents``, or as many as the
        budget holds at the cap when that is fewer (a small test budget needs no more)."""
        wanted = (val_budget // block_len) * block_len
        if self.val_doc_tokens is None:
            return self.val_min_documents
        return min(self.val_min_documents, math.ceil(wanted / (self.val_doc_tokens + 1)))


PLAIN = DataRules(val_doc_tokens=None, val_min_documents=1, pool_factor=1, dedup_words=12,
                  dedup_max_containment=None)


@dataclass
class DomainData:
    """A prepared domain. ``train_blocks`` is the training *pool*; a stage trains on
    :meth:`stage_blocks`. Validation token ``val_blocks[i, j]`` came from document
    ``val_doc_ids[val_doc_index[i, j]]`` (the EOS after a document is that document's); a
    DomainData made by hand without them is one document, named after the domain."""

    name: str
    train_blocks: torch.Tensor   # [n_pool, block_len] token ids: the pool a stage draws from
    val_blocks: torch.Tensor     # [n_val, block_len] token ids
    val_bytes: int               # UTF-8 bytes of the predicted validation tokens (for bits per byte)
    info: dict = field(default_factory=dict)  # provenance for run.json
    val_stream_bytes: int = 0    # the same when the blocks are scored as one stream (strided PPL)
    from_cache: bool = False     # read from the token cache (not in info: results must not differ)
    val_doc_index: torch.Tensor | None = None  # [n_val, block_len] index into val_doc_ids
    val_doc_ids: tuple[str, ...] = ()          # the validation documents, in packing order
    blocks_per_stage: int | None = None        # a stage's budget in blocks; None: the whole pool

    def __post_init__(self):
        if self.val_doc_index is None:
            self.val_doc_index = torch.zeros_like(self.val_blocks)
            self.val_doc_ids = self.val_doc_ids or (self.name,)

    def stage_blocks(self, seed: int) -> torch.Tensor:
        """The blocks one stage trains on: ``blocks_per_stage`` blocks drawn from the pool without
        replacement by a generator seeded with ``seed``, in pool order (the training loop
        shuffles them); the whole pool when it is no larger than that."""
        n = len(self.train_blocks) if self.blocks_per_stage is None else self.blocks_per_stage
        if len(self.train_blocks) <= n:
            return self.train_blocks
        drawn = torch.randperm(len(self.train_blocks), generator=torch.Generator().manual_seed(seed))
        return self.train_blocks[drawn[:n].sort().values]


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
                   val_tokens: int, docs: list[Document] | None = None,
                   rules: DataRules = PLAIN) -> DomainData:
    """Split, screen, tokenise and pack one domain, through the token cache
    (gainbench.data.token_cache).

    ``train_tokens`` / ``val_tokens`` are the sequence-wide budgets; the spec's own, if set,
    replace them. ``rules`` are the config's (``RunSettings.data_rules``). Errors
    (GainbenchError), raised before any training:

    * no document, or too little train text for one block;
    * too few validation documents, or less validation text than the validation budget: every
      stage must score the same, full set of validation tokens, so a short validation split is
      refused, not silently shrunk.

    Train text that runs out before the train budget is *not* an error: the domain trains on
    what it has, and ``info["note"]`` (in run.json) and a line on stderr say how much that was.
    """
    train_budget, val_budget = spec.budgets(train_tokens, val_tokens)
    docs = read_documents(spec) if docs is None else docs
    train_docs, val_docs = split_documents(docs, spec.validation_percent)
    key = (token_cache.entry_key(tokenizer, spec, train_docs, val_docs, block_len,
                                 train_budget * rules.pool_factor, val_budget,
                                 packing=_packing_identity(rules))
           if token_cache.enabled() else None)
    packed = token_cache.load(key) if key else None
    from_cache = packed is not None
    if packed is None:
        packed = _pack_domain(spec, tokenizer, train_docs, val_docs, block_len, train_budget,
                              val_budget, rules)
        if key:
            token_cache.store(key, packed, about={
                "domain": spec.name, "tokenizer": getattr(tokenizer, "name_or_path", "")})
    _check_validation_documents(spec, packed, rules, val_budget, block_len)
    blocks_per_stage = train_budget // block_len
    stage_tokens = min(len(packed.train_blocks), blocks_per_stage) * block_len
    info = {
        "source": dict(spec.source), "licence": spec.licence, "description": spec.description,
        "documents": {"train": packed.train_documents, "validation": packed.val_documents},
        "train_tokens": stage_tokens,
        "train_pool_tokens": int(packed.train_blocks.numel()),
        "val_tokens": int(packed.val_blocks.numel()),
        "val_documents": len(packed.val_doc_ids),
        "val_doc_tokens": rules.val_doc_tokens,
        "val_fingerprint": hashlib.sha256(packed.val_blocks.numpy().tobytes()).hexdigest()[:16],
    }
    if rules.dedup_max_containment is not None:
        info["near_duplicates"] = {
            "shingle_words": rules.dedup_words, "max_containment": rules.dedup_max_containment,
            "dropped_train_documents": len(packed.dropped),
            "dropped": [list(pair) for pair in packed.dropped[:_LISTED_DROPS]]}
    if stage_tokens < blocks_per_stage * block_len:
        info["note"] = (f"train text ran out: {stage_tokens} of {train_budget} budgeted tokens")
        print(f"gainbench: note: domain '{spec.name}': {info['note']}", file=sys.stderr)
    return DomainData(spec.name, packed.train_blocks, packed.val_blocks, packed.val_bytes, info,
                      val_stream_bytes=packed.val_stream_bytes, from_cache=from_cache,
                      val_doc_index=packed.val_doc_index, val_doc_ids=packed.val_doc_ids,
                      blocks_per_stage=blocks_per_stage)


_LISTED_DROPS = 20  # run.json lists the first few dropped training documents; it counts them all


def _packing_identity(rules: DataRules) -> dict:
    """What in ``rules`` changes the packed blocks (the minimum of documents only checks them)."""
    screen = (None if rules.dedup_max_containment is None
              else [rules.dedup_words, rules.dedup_max_containment])
    return {"val_doc_tokens": rules.val_doc_tokens, "dedup": screen}


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
                 val_budget: int, rules: DataRules = PLAIN) -> token_cache.PackedDomain:
    _check_both_sides(spec, train_docs, val_docs, train_budget, val_budget)
    required = rules.required_val_documents(val_budget, block_len)
    if val_budget >= block_len and len(val_docs) < required:
        raise GainbenchError(
            f"domain '{spec.name}' has {len(val_docs)} validation documents, fewer than the "
            f"{required} its validation set must come from (eval.val_min_documents="
            f"{rules.val_min_documents}); raise sequence.domains.{spec.name}.validation_percent "
            f"(now {spec.validation_percent:g}), add documents, or lower eval.val_min_documents")
    dropped: list[dedup.NearDuplicate] = []
    if rules.dedup_max_containment is not None:
        train_docs, dropped = dedup.screen_training(train_docs, val_docs, rules.dedup_words,
                                                    rules.dedup_max_containment)
    train = pack_documents(train_docs, tokenizer, block_len, train_budget * rules.pool_factor)
    if len(train) == 0 and train_budget > 0:
        raise GainbenchError(
            f"domain '{spec.name}' has too little train text for one block of {block_len} tokens "
            f"({len(train_docs)} documents); add text, lower "
            f"sequence.domains.{spec.name}.validation_percent, or lower train.seq_len")
    val, val_index, val_ids = pack_traced(val_docs, tokenizer, block_len, val_budget,
                                          doc_tokens=rules.val_doc_tokens)
    wanted = (val_budget // block_len) * block_len
    if val.numel() < wanted:
        capped = ("" if rules.val_doc_tokens is None else
                  f" at most {rules.val_doc_tokens} tokens each (eval.val_doc_tokens),")
        raise GainbenchError(
            f"domain '{spec.name}' has too little validation text: {val.numel()} tokens in whole "
            f"blocks of {block_len} ({len(val_docs)} documents,{capped} validation_percent="
            f"{spec.validation_percent:g}) for a validation budget of {val_budget}; raise "
            f"sequence.domains.{spec.name}.validation_percent, add text, or lower eval.val_tokens "
            f"(or +sequence.domains.{spec.name}.val_tokens)")
    return token_cache.PackedDomain(
        train, val, predicted_bytes(val, tokenizer), predicted_bytes(val.view(1, -1), tokenizer),
        train_documents=len(train_docs), val_documents=len(val_docs), val_doc_index=val_index,
        val_doc_ids=val_ids,
        dropped=[(d.train_id, d.val_id, round(d.containment, 4)) for d in dropped])


def _check_validation_documents(spec: DomainSpec, packed, rules: DataRules, val_budget: int,
                                block_len: int) -> None:
    """The validation tokens must come from enough documents (checked on cache hits too: the
    minimum is not part of the cache key)."""
    required = rules.required_val_documents(val_budget, block_len)
    used = len(packed.val_doc_ids)
    if used >= required or not packed.val_blocks.numel():
        return
    cap = max(1, (packed.val_blocks.numel() // required) - 1)
    now = ("null: whole documents" if rules.val_doc_tokens is None
           else f"now {rules.val_doc_tokens}")
    raise GainbenchError(
        f"domain '{spec.name}': its {packed.val_blocks.numel()} validation tokens come from "
        f"{used} of its {packed.val_documents} validation documents, fewer than "
        f"eval.val_min_documents={rules.val_min_documents}; set eval.val_doc_tokens <= {cap} "
        f"({now}) so each document gives fewer tokens, or lower eval.val_min_documents")

"""Near-duplicate screening: training documents that contain a validation document are dropped.

A document's *shingles* are its runs of ``n`` consecutive words (lower-cased ``\\w+`` tokens, so
punctuation and layout do not hide a copy), hashed to 64 bits. The *containment* of validation
document ``v`` in training document ``t`` is ``|S(v) & S(t)| / |S(v)|``: the share of ``v``'s
shingles that appear word for word in ``t``. A training document is dropped when some validation
document's containment in it reaches ``max_containment``; validation documents are never touched,
so the validation set stays what the split made it.

Why containment and not Jaccard: a long training document that quotes a short validation document
whole (pydoc's ``specialnames``, the whole "Special method names" chapter, holds the topics
``numeric-types`` and ``attribute-access`` entire) has a small Jaccard similarity but leaks every
validation token. Why 12 words: shorter runs match idioms and boilerplate (``for i in range(len(``,
licence lines), longer ones miss lightly edited copies. The threshold (``eval.val_dedup``, default
0.15 in gainbench/config/schema.py) is set low because a dropped training document costs next to
nothing: on embedded8 it drops 22 of ~14,600 training documents, copies (``specialnames``; 2 Kings
19, which holds 52% of Isaiah 37) and partial ones (Psalm 60, 28% of Psalm 108; a templated French
summary; networkx's ``sparse6.py``, 17% of ``graph6.py``, and six flow modules sharing up to a
quarter of ``flow/utils.py``'s docstrings). The largest containment it keeps is 0.14.

Every validation document of the split is screened, not only those a budget scores, so a run's
training text does not depend on its evaluation budget. Exact: every shingle is compared (no MinHash sampling); a document shorter than ``n`` words has
no shingle and is never matched. Hashes are a polynomial over per-call word ids, so the result is
the same in every process (Python's ``hash`` of a string is not).
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from gainbench.data.sources.document import Document

_WORD = re.compile(r"\w+")
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: the hash is a bijection of the last word id
# A shingle in more than this many training documents is boilerplate (a licence header, a
# template sentence), left out of every containment: without it, a short validation file that is
# mostly a licence header would "contain" itself in every training file that carries the header.
BOILERPLATE_DOCUMENTS = 10


@dataclass(frozen=True)
class NearDuplicate:
    """A training document dropped for containing a validation document."""

    train_id: str
    val_id: str
    containment: float


class Shingler:
    """Hashed word shingles; one instance maps words to ids, so compare shingles made by one."""

    def __init__(self, words: int):
        if words < 1:
            raise ValueError(f"shingles need at least one word, got {words}")
        self.words = words
        self._ids: defaultdict[str, int] = defaultdict(itertools.count(1).__next__)  # a new word: next id

    def __call__(self, text: str) -> np.ndarray:
        """The sorted, unique shingle hashes of ``text`` (uint64; empty when it is too short)."""
        return np.unique(next(self.batches([text]))[0])

    def batches(self, texts: Sequence[str], batch_words: int = 1 << 20
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each text's shingle hashes in text order, repeats included, ``(hashes, text index)``,
        a batch of texts at a time (about ``batch_words`` words each: bounded memory on corpora
        of books), computed for the whole batch at once."""
        start = 0
        while start < len(texts) or start == 0:
            tokens, lengths = [], []
            end = start
            while end < len(texts) and (not lengths or sum(lengths) < batch_words):
                words = _WORD.findall(texts[end].lower())
                tokens.extend(words)
                lengths.append(len(words))
                end += 1
            yield self._hash(tokens, np.array(lengths, dtype=np.int64), start)
            start = end
            if end == 0:
                break

    def _hash(self, tokens: list[str], lengths: np.ndarray, first: int):
        ids = np.fromiter(map(self._ids.__getitem__, tokens), dtype=np.uint64, count=len(tokens))
        count = len(ids) - self.words + 1
        if count <= 0:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
        hashes = np.zeros(count, dtype=np.uint64)
        with np.errstate(over="ignore"):  # arithmetic modulo 2**64 is the point
            for offset in range(self.words):
                hashes = hashes * _MULTIPLIER + ids[offset:offset + count]
        text_of = np.repeat(np.arange(first, first + len(lengths)), lengths)
        inside = text_of[:count] == text_of[self.words - 1:]   # a run within one text
        return hashes[inside], text_of[:count][inside]


def containment(inner: str, outer: str, words: int) -> float:
    """The share of ``inner``'s ``words``-word shingles found in ``outer`` (0 when it has none)."""
    shingle = Shingler(words)
    a, b = shingle(inner), shingle(outer)
    return float(np.isin(a, b).sum() / len(a)) if len(a) else 0.0


def screen_training(train_docs: Sequence[Document], val_docs: Sequence[Document], words: int,
                    max_containment: float) -> tuple[list[Document], list[NearDuplicate]]:
    """``train_docs`` less those that contain a validation document at ``max_containment`` or
    more, in their order, and what was dropped (each with its most contained validation document;
    the first in split order on a tie).

    Shingles found in more than :data:`BOILERPLATE_DOCUMENTS` training documents are left out of
    every containment (numerator and denominator): they are the domain's boilerplate, not one
    document's text.
    """
    shingle = Shingler(words)
    hashes, owner = (np.concatenate(parts) for parts in
                     zip(*shingle.batches([d.text for d in val_docs])))
    if not len(hashes):
        return list(train_docs), []
    hashes, owner = _unique_pairs(hashes, owner)
    # Every validation shingle once (sorted), and the validation documents it occurs in:
    # owner[first[i]:first[i] + count[i]] after sorting by shingle.
    unique, at, count = np.unique(hashes, return_inverse=True, return_counts=True)
    owner = owner[np.argsort(at, kind="stable")]
    first = np.cumsum(count) - count

    # Which validation shingles each training document holds: pairs (training document, shingle).
    held_by, held = [], []
    for hashes, doc in shingle.batches([d.text for d in train_docs]):
        where = np.searchsorted(unique, hashes).clip(max=len(unique) - 1)
        hit = unique[where] == hashes
        where, doc = _unique_pairs(where[hit], doc[hit])
        held_by.append(doc)
        held.append(where)
    held_by, held = np.concatenate(held_by), np.concatenate(held)

    # Boilerplate out, then the containment of every (training, validation) pair that shares any.
    common = np.bincount(held, minlength=len(unique)) > BOILERPLATE_DOCUMENTS
    sizes = np.bincount(owner[~np.repeat(common, count)], minlength=len(val_docs))
    held_by, held = held_by[~common[held]], held[~common[held]]
    pairs_t = np.repeat(held_by, count[held])             # a shingle in several validation
    pairs_v = owner[_ranges(first[held], first[held] + count[held])]  # documents counts for each
    pair, shared = np.unique(pairs_t * len(val_docs) + pairs_v, return_counts=True)
    t, v = pair // len(val_docs), pair % len(val_docs)
    share = shared / np.maximum(sizes[v], 1)
    # each training document's most contained validation document (the first on a tie)
    order = np.lexsort((v, -share, t))
    best = order[np.r_[True, t[order][1:] != t[order][:-1]]] if len(order) else order
    worst = {int(t[i]): (int(v[i]), float(share[i])) for i in best if share[i] >= max_containment}

    kept, dropped = [], []
    for i, doc in enumerate(train_docs):
        if i in worst:
            v_i, c = worst[i]
            dropped.append(NearDuplicate(doc.doc_id, val_docs[v_i].doc_id, c))
        else:
            kept.append(doc)
    return kept, dropped


def _unique_pairs(values: np.ndarray, doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each (value, document) pair once: a shingle counts once per document."""
    order = np.lexsort((values, doc))
    values, doc = values[order], doc[order]
    new = np.ones(len(values), dtype=bool)
    new[1:] = (values[1:] != values[:-1]) | (doc[1:] != doc[:-1])
    return values[new], doc[new]


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The indices ``lo[0]..hi[0]-1, lo[1]..hi[1]-1, ...`` in one array, without a Python loop."""
    counts = hi - lo
    starts = np.cumsum(counts) - counts   # where each range begins in the output
    return np.arange(int(counts.sum())) + np.repeat(lo - starts, counts)

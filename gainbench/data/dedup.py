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

import re
from collections.abc import Sequence
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
        self._ids: dict[str, int] = {}

    def __call__(self, text: str) -> np.ndarray:
        """The sorted, unique shingle hashes of ``text`` (uint64; empty when it is too short)."""
        ids = self._ids
        tokens = np.fromiter((ids.setdefault(w, len(ids) + 1) for w in _WORD.findall(text.lower())),
                             dtype=np.uint64)
        count = len(tokens) - self.words + 1
        if count <= 0:
            return np.zeros(0, dtype=np.uint64)
        hashes = np.zeros(count, dtype=np.uint64)
        with np.errstate(over="ignore"):  # arithmetic modulo 2**64 is the point
            for offset in range(self.words):
                hashes = hashes * _MULTIPLIER + tokens[offset:offset + count]
        return np.unique(hashes)


def containment(inner: str, outer: str, words: int) -> float:
    """The share of ``inner``'s ``words``-word shingles found in ``outer`` (0 when it has none)."""
    shingle = Shingler(words)
    a, b = shingle(inner), shingle(outer)
    return float(np.isin(a, b).sum() / len(a)) if len(a) else 0.0


def screen_training(train_docs: Sequence[Document], val_docs: Sequence[Document], words: int,
                    max_containment: float) -> tuple[list[Document], list[NearDuplicate]]:
    """``train_docs`` less those that contain a validation document at ``max_containment`` or
    more, in their order, and what was dropped (each with its most contained validation document).

    Shingles found in more than :data:`BOILERPLATE_DOCUMENTS` training documents are left out of
    every containment (numerator and denominator): they are the domain's boilerplate, not one
    document's text.
    """
    shingle = Shingler(words)
    val_sets = [shingle(d.text) for d in val_docs]
    if not any(len(s) for s in val_sets):
        return list(train_docs), []
    # Every validation shingle once, sorted (unique), and for each, the documents it occurs in:
    # owner[first[i]:first[i] + count[i]].
    hashes = np.concatenate(val_sets)
    owner = np.repeat(np.arange(len(val_sets)), [len(s) for s in val_sets])
    order = np.argsort(hashes, kind="stable")
    hashes, owner = hashes[order], owner[order]
    unique, first, count = np.unique(hashes, return_index=True, return_counts=True)

    # Pass 1: which validation shingles each training document holds, and in how many documents
    # each validation shingle occurs.
    found_in = np.zeros(len(unique), dtype=np.int64)
    matches = []
    for doc in train_docs:
        found = shingle(doc.text)
        at = np.searchsorted(unique, found).clip(max=len(unique) - 1)
        hit = at[unique[at] == found]
        found_in[hit] += 1
        matches.append(hit)

    # Pass 2: containment of each validation document in each training document, less boilerplate.
    common = found_in > BOILERPLATE_DOCUMENTS
    sizes = np.bincount(owner[~np.repeat(common, count)], minlength=len(val_sets))
    kept, dropped = [], []
    for doc, hit in zip(train_docs, matches):
        hit = hit[~common[hit]]
        if len(hit):
            # a shingle shared by several validation documents counts for each of them
            shared = owner[_ranges(first[hit], first[hit] + count[hit])]
            shares = np.bincount(shared, minlength=len(val_sets)) / np.maximum(sizes, 1)
            worst = int(shares.argmax())
            if shares[worst] >= max_containment:
                dropped.append(NearDuplicate(doc.doc_id, val_docs[worst].doc_id, float(shares[worst])))
                continue
        kept.append(doc)
    return kept, dropped


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The indices ``lo[0]..hi[0]-1, lo[1]..hi[1]-1, ...`` in one array, without a Python loop."""
    counts = hi - lo
    starts = np.cumsum(counts) - counts   # where each range begins in the output
    return np.arange(int(counts.sum())) + np.repeat(lo - starts, counts)

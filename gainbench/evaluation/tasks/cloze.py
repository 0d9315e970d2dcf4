"""Dataset builder for ``gb_cloze_embedded``: a 4-way cloze task from held-out domain text.

Each item is a passage from a *validation* document of one embedded domain (never trained
on, DESIGN.md section 6), cut into a context of ``context_words`` words and its true
continuation of ``continuation_words`` words. The three distractors are continuations of
passages from *other documents of the same domain*: with other-domain distractors the
answer is the only one in the context's language or style (French vs code vs ICD codes),
which any fluent model finds; same-domain distractors share that style, so picking the
right one takes knowledge of the domain's content. Continuations all have the same word
count, so length is no cue either.

Everything is fixed by ``SEED`` (not the run seed): the same items on every call, machine
and run. The gold position is balanced within each domain (each of the 4 slots equally
often). Words are whitespace-separated tokens cut from the original text, so code keeps
its newlines and indentation inside a context or a choice; a choice's leading whitespace
is dropped and lm-eval's default " " delimiter joins it to the context.
"""

from __future__ import annotations

import random
import re
from functools import cache

import datasets
from omegaconf import OmegaConf

from gainbench.data.domains import DomainSpec, read_documents, split_documents
from gainbench.paths import CONFIG_DIR  # the configs the runs use, so the two cannot drift

SEED = "gb_cloze_embedded/v1"  # a constant: items do not depend on the run's seed
N_CHOICES = 4
_WORD = re.compile(r"\S+")


def sequence_domains(sequence: str = "embedded8") -> list[DomainSpec]:
    """The domains of ``configs/sequence/<sequence>.yaml``, as the protocol builds them."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "sequence" / f"{sequence}.yaml"))
    return [DomainSpec(name=name, **cfg["domains"][name]) for name in cfg["order"]]


def _passages(docs, context_words: int, continuation_words: int) -> list[dict]:
    """Non-overlapping windows of each document, round-robin over documents.

    Window 0 of every document comes first, then window 1, ...: the first items spread over
    as many documents as the domain has, and a domain with few long documents (python_docs)
    still yields enough passages.
    """
    size = context_words + continuation_words
    per_doc = []
    for doc in docs:
        spans = [m.span() for m in _WORD.finditer(doc.text)]
        windows = []
        for start in range(0, len(spans) - size + 1, size):
            ctx, cont = spans[start:start + context_words], spans[start + context_words:start + size]
            windows.append({"doc_id": doc.doc_id,
                            "context": doc.text[ctx[0][0]:ctx[-1][1]],
                            "continuation": doc.text[cont[0][0]:cont[-1][1]]})
        per_doc.append(windows)
    longest = max(map(len, per_doc), default=0)
    return [w[i] for i in range(longest) for w in per_doc if i < len(w)]


def _norm(text: str) -> str:
    return " ".join(text.split())


def domain_items(name: str, docs, n_items: int, context_words: int, continuation_words: int) -> list[dict]:
    passages = _passages(docs, context_words, continuation_words)
    if len(passages) < n_items:
        raise ValueError(f"gb_cloze_embedded: domain {name!r} has {len(passages)} validation passages "
                         f"of {context_words + continuation_words} words, fewer than {n_items}")
    rng = random.Random(f"{SEED}/{name}")  # str seeds hash with sha512: stable across processes
    gold_slots = [i % N_CHOICES for i in range(n_items)]  # balanced, then shuffled
    rng.shuffle(gold_slots)
    items = []
    for passage, slot in zip(passages[:n_items], gold_slots):
        pool = [p["continuation"] for p in passages if p["doc_id"] != passage["doc_id"]]
        rng.shuffle(pool)
        choices, seen = [passage["continuation"]], {_norm(passage["continuation"])}
        for cand in pool:  # first distinct ones: repeated phrases (KJV, ICD-10) must not duplicate
            if _norm(cand) not in seen:
                choices.append(cand)
                seen.add(_norm(cand))
            if len(choices) == N_CHOICES:
                break
        if len(choices) < N_CHOICES:
            raise ValueError(f"gb_cloze_embedded: domain {name!r} has too few distinct distractors")
        distractors = choices[1:]
        choices = distractors[:slot] + [passage["continuation"]] + distractors[slot:]
        items.append({"domain": name, "doc_id": passage["doc_id"], "context": passage["context"],
                      "choices": choices, "answer": slot})
    return items


@cache
def build_items(sequence: str = "embedded8", items_per_domain: int = 20, context_words: int = 48,
                continuation_words: int = 12) -> tuple[dict, ...]:
    """All items, domain by domain in the sequence's order (cached: lm-eval rebuilds the task
    at every evaluated stage)."""
    items = []
    for spec in sequence_domains(sequence):
        _, val_docs = split_documents(read_documents(spec), spec.validation_percent)
        items += domain_items(spec.name, val_docs, items_per_domain, context_words, continuation_words)
    return tuple(items)


def load_cloze(split: str = "validation", sequence: str = "embedded8", items_per_domain: int = 20,
               context_words: int = 48, continuation_words: int = 12, **_metadata) -> datasets.DatasetDict:
    """lm-eval's ``custom_dataset``: called with the task's ``dataset_kwargs`` and ``metadata``."""
    # lm-eval loads this file under a path-derived module name: go through the package's own
    # module so the cache is one per process, whichever way this function was reached.
    from gainbench.evaluation.tasks.cloze import build_items

    items = build_items(sequence, int(items_per_domain), int(context_words), int(continuation_words))
    return datasets.DatasetDict({split: datasets.Dataset.from_list([dict(i) for i in items])})

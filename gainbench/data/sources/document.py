"""What every source returns: documents with ids that are the same on every machine."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str

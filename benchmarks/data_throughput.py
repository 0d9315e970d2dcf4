"""Data throughput: tokenising and packing a domain, iterating packed batches, and the token cache.

    python benchmarks/data_throughput.py [--tokenizer smollm2|tiny] [--source kjv_bible]
                                         [--train-tokens 400000] [--reps 5] [--quick] [--out DIR]

Measures, on one embedded domain (default: the King James Bible with the SmolLM2 tokenizer):

* tokenisation: tokens/s of ``pack_documents`` (the harness's tokenise-and-pack) with the HF
  tokenizers' Rust thread pool off (``TOKENIZERS_PARALLELISM=false``, what ``python -m gainbench``
  sets) and on, interleaved (off, on, off, on, ...) so machine load hits both alike;
* the packed loader: tokens/s of drawing training batches from the packed blocks exactly as
  ``gainbench.training.loop`` does (seeded permutation, fancy indexing, ``.to(device)``);
* the token cache: seconds of ``prepare_domain`` tokenising afresh (cache off) against loading
  the same domain from the cache (a hit: hashing the documents, reading the file), in a
  temporary cache folder, never the user's.

Medians over ``--reps`` repetitions. ``--quick``: one repetition on a small budget (a smoke
check of the script, not a measurement). Prints a table and writes ``data_throughput.json``
into ``--out`` (default results/bench). Absolute numbers depend on the machine and its load;
the ratios, measured side by side, are what carry over.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gainbench.data import token_cache
from gainbench.data.domains import DomainSpec, pack_documents, prepare_domain, split_documents
from gainbench.data.sources import load_documents


def load_tokenizer(name: str):
    if name == "tiny":
        from gainbench.models.tiny import train_byte_bpe

        return train_byte_bpe(["benchmark text, with some words. " * 200], 300)
    from transformers import AutoTokenizer

    from gainbench.models.embedded import smollm2_folder

    return AutoTokenizer.from_pretrained(str(smollm2_folder()))


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def tokenise_like_pack(docs, tokenizer, chunk: int = 64) -> int:
    """The tokenizer calls pack_documents makes (batches of ``chunk`` documents); tokens made."""
    texts = [d.text for d in docs]
    return sum(len(ids) + 1 for start in range(0, len(texts), chunk)  # + 1: the EOS separator
               for ids in tokenizer(texts[start:start + chunk], add_special_tokens=False)["input_ids"])


def tokenisation(docs, tokenizer, block_len: int, budget: int, reps: int) -> dict:
    """tokens/s of tokenising (the calls pack_documents makes, on the documents it needs for the
    budget) with the Rust thread pool off and on, interleaved; and of pack_documents as a whole
    (packed tokens/s, parallelism off)."""
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    seconds: dict[str, list[float]] = {"off": [], "on": [], "pack": []}
    try:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        blocks = pack_documents(docs, tokenizer, block_len, budget)  # warm-up
        needed = _documents_needed(docs, tokenizer, blocks.numel())
        tokens = tokenise_like_pack(needed, tokenizer)
        for _ in range(reps):
            for mode, value in (("off", "false"), ("on", "true")):
                os.environ["TOKENIZERS_PARALLELISM"] = value
                seconds[mode].append(timed(lambda: tokenise_like_pack(needed, tokenizer))[1])
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            blocks, dt = timed(lambda: pack_documents(docs, tokenizer, block_len, budget))
            seconds["pack"].append(dt)
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous
    per_s = {m: tokens / statistics.median(seconds[m]) for m in ("off", "on")}
    per_s["pack"] = blocks.numel() / statistics.median(seconds["pack"])
    return {"tokens": tokens, "packed_tokens": int(blocks.numel()), "documents": len(needed),
            "blocks": blocks, "seconds": seconds, "tokens_per_s": per_s}


def _documents_needed(docs, tokenizer, packed_tokens: int, chunk: int = 64):
    """The whole 64-document chunks pack_documents tokenises to collect ``packed_tokens``."""
    total = 0
    for start in range(0, len(docs), chunk):
        total += tokenise_like_pack(docs[start:start + chunk], tokenizer, chunk)
        if total >= packed_tokens:
            return docs[:start + chunk]
    return docs


def loader(blocks: torch.Tensor, batch_size: int, reps: int, device: str = "cpu") -> dict:
    """tokens/s of iterating one epoch of batches as gainbench.training.loop does."""
    def epoch(seed):
        order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
        for step in range((len(blocks) + batch_size - 1) // batch_size):
            batch = blocks[order[step * batch_size:(step + 1) * batch_size]].to(device)
        return batch

    epoch(0)
    seconds = [timed(lambda: epoch(rep))[1] for rep in range(max(reps, 3))]
    return {"seconds": seconds, "tokens_per_s": blocks.numel() / statistics.median(seconds)}


def cache(docs, tokenizer, block_len: int, train_budget: int, val_budget: int, reps: int) -> dict:
    """prepare_domain tokenising afresh vs from a cache hit, in a private cache folder."""
    spec = DomainSpec(name="bench", source={"kind": "bench"})
    prepare = lambda: prepare_domain(spec, tokenizer, block_len, train_budget, val_budget, docs)  # noqa: E731
    seconds: dict[str, list[float]] = {"fresh": [], "hit": []}
    with tempfile.TemporaryDirectory(prefix="gainbench-bench-") as folder:
        token_cache.folder = lambda: Path(folder)  # this process only
        first, miss_seconds = timed(prepare)  # fresh + write
        for _ in range(reps):
            os.environ[token_cache.ENV_SWITCH] = "0"
            fresh, dt = timed(prepare)
            seconds["fresh"].append(dt)
            os.environ[token_cache.ENV_SWITCH] = "1"
            hit, dt = timed(prepare)
            seconds["hit"].append(dt)
            assert hit.from_cache and torch.equal(hit.train_blocks, fresh.train_blocks)
            assert torch.equal(hit.val_blocks, fresh.val_blocks) and hit.info == fresh.info
        entry_bytes = sum(p.stat().st_size for p in Path(folder).iterdir())
    os.environ.pop(token_cache.ENV_SWITCH, None)
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    return {"seconds": seconds, "median_s": medians, "miss_and_write_s": miss_seconds,
            "speedup": medians["fresh"] / medians["hit"], "entry_bytes": entry_bytes,
            "tokens": int(first.train_blocks.numel() + first.val_blocks.numel())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", default="smollm2", choices=["smollm2", "tiny"])
    parser.add_argument("--source", default="kjv_bible", help="an embedded source kind without options")
    parser.add_argument("--train-tokens", type=int, default=400_000)
    parser.add_argument("--val-tokens", type=int, default=32_768)
    parser.add_argument("--block-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one repetition on a small budget")
    parser.add_argument("--out", default="results/bench", help="folder for data_throughput.json")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (the loader)")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.train_tokens, args.val_tokens = 1, 16_384, 2_048

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(args.tokenizer)
    docs = load_documents(args.source)
    train_docs, _ = split_documents(docs, 10.0)
    load_before = os.getloadavg()[0]
    tok = tokenisation(train_docs, tokenizer, args.block_len, args.train_tokens, args.reps)
    feed = loader(tok["blocks"], args.batch_size, args.reps)
    cached = cache(docs, tokenizer, args.block_len, args.train_tokens, args.val_tokens, args.reps)

    result = {
        "tokenizer": args.tokenizer, "source": args.source, "documents": len(docs),
        "block_len": args.block_len, "batch_size": args.batch_size, "reps": args.reps,
        "quick": args.quick, "train_tokens": args.train_tokens, "val_tokens": args.val_tokens,
        "cpu_count": os.cpu_count(), "load_avg_1min_at_start": round(load_before, 2),
        "machine": platform.machine(), "python": platform.python_version(),
        "tokenize_tokens": tok["tokens"], "tokenize_documents": tok["documents"],
        "tokenize_tokens_per_s": {m: round(tok["tokens_per_s"][m]) for m in ("off", "on")},
        "tokenize_parallel_speedup": tok["tokens_per_s"]["on"] / tok["tokens_per_s"]["off"],
        "pack_documents_packed_tokens_per_s": round(tok["tokens_per_s"]["pack"]),
        "tokenize_seconds": tok["seconds"],
        "loader_tokens_per_s": round(feed["tokens_per_s"]),
        "loader_over_pack_ratio": feed["tokens_per_s"] / tok["tokens_per_s"]["pack"],
        "prepare_fresh_s": cached["median_s"]["fresh"], "prepare_cache_hit_s": cached["median_s"]["hit"],
        "prepare_miss_and_write_s": cached["miss_and_write_s"],
        "cache_speedup": cached["speedup"], "cache_entry_bytes": cached["entry_bytes"],
        "prepare_seconds": cached["seconds"],
    }
    rows = [
        ("tokenise, parallelism off", f"{tok['tokens_per_s']['off']:,.0f} tokens/s",
         f"{tok['tokens']:,} tokens, {tok['documents']} documents"),
        ("tokenise, parallelism on", f"{tok['tokens_per_s']['on']:,.0f} tokens/s",
         f"x{result['tokenize_parallel_speedup']:.2f} vs off"),
        ("pack_documents (tokenise + pack)", f"{tok['tokens_per_s']['pack']:,.0f} tokens/s",
         f"{tok['packed_tokens']:,} packed tokens"),
        ("packed loader (training batches)", f"{feed['tokens_per_s']:,.0f} tokens/s",
         f"x{result['loader_over_pack_ratio']:,.0f} vs pack_documents"),
        ("prepare_domain, fresh (cache off)", f"{cached['median_s']['fresh']:.3f} s",
         f"{cached['tokens']:,} tokens"),
        ("prepare_domain, cache hit", f"{cached['median_s']['hit']:.3f} s",
         f"x{cached['speedup']:.1f} faster"),
        ("prepare_domain, first miss + write", f"{cached['miss_and_write_s']:.3f} s",
         f"incl. fingerprinting the tokenizer once; {cached['entry_bytes']:,} bytes on disk"),
    ]
    print(f"data throughput: {args.tokenizer} tokenizer, {args.source} ({len(docs)} documents), "
          f"median of {args.reps}, {os.cpu_count()} CPUs, load {load_before:.1f}")
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>20}  {note}")
    out = Path(args.out) / "data_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Evaluation throughput: gainbench's pooled-NLL evaluation vs a bare ``model(input_ids)`` loop.

    python benchmarks/eval_throughput.py [--model smollm2|tiny] [--blocks 16] [--reps 5]
                                         [--threads 1] [--quick] [--out DIR]

Both sides run over the same blocks, in the same process, interleaved (A B A B ...) after a
warm-up, so machine load hits both alike. Prints tokens/s of each and the ratio
harness/bare (target >= 0.95), and writes eval_throughput.json under --out (default
results/bench/). ``--quick`` (tiny model, 4 short blocks, one repetition) is what the tests run.
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from gainbench.evaluation.perplexity import validation_nll


def load(model_name: str):
    if model_name == "tiny":
        from gainbench.models.tiny import build_tiny_model, train_byte_bpe

        tokenizer = train_byte_bpe(["benchmark text " * 200], 300)
        return build_tiny_model({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                 "num_hidden_layers": 2, "num_attention_heads": 4,
                                 "max_position_embeddings": 512}, tokenizer)
    from transformers import AutoModelForCausalLM

    from gainbench.models.embedded import smollm2_folder

    return AutoModelForCausalLM.from_pretrained(smollm2_folder(), dtype=torch.float32).eval()


@torch.inference_mode()
def bare_loop(model, blocks, batch_size):
    for start in range(0, len(blocks), batch_size):
        model(input_ids=blocks[start:start + batch_size])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2", choices=["smollm2", "tiny"])
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--block-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="tiny model, small sizes, one repetition")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args()
    if args.quick:
        args.model, args.blocks, args.block_len, args.batch_size, args.reps = "tiny", 4, 32, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load(args.model)
    blocks = torch.randint(0, model.config.vocab_size, (args.blocks, args.block_len),
                           generator=torch.Generator().manual_seed(0))
    harness = lambda: validation_nll(model, blocks, n_bytes=1, batch_size=args.batch_size)  # noqa: E731
    bare = lambda: bare_loop(model, blocks, args.batch_size)  # noqa: E731
    harness(), bare()  # warm-up
    times = {"harness": [], "bare": []}
    for _ in range(args.reps):
        for name, fn in (("harness", harness), ("bare", bare)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    tokens = blocks.numel()
    result = {
        "model": args.model, "blocks": args.blocks, "block_len": args.block_len,
        "batch_size": args.batch_size, "reps": args.reps, "threads": torch.get_num_threads(),
        "machine": platform.machine(), "torch": torch.__version__,
        **{f"{name}_tokens_per_s_median": tokens / statistics.median(t) for name, t in times.items()},
        **{f"{name}_seconds": t for name, t in times.items()},
    }
    result["ratio_harness_over_bare"] = (result["harness_tokens_per_s_median"]
                                         / result["bare_tokens_per_s_median"])
    print(f"{'':10}{'tokens/s (median)':>20}{'min s':>10}{'max s':>10}")
    for name, t in times.items():
        print(f"{name:10}{tokens / statistics.median(t):>20.1f}{min(t):>10.3f}{max(t):>10.3f}")
    print(f"ratio harness / bare: {result['ratio_harness_over_bare']:.3f} (target >= 0.95)")
    out = args.out / "eval_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

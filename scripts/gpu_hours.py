"""GPU-hours of the paper's grid, per model x method, from FLOPs and a throughput.

    python scripts/gpu_hours.py                          # experiment=paper_grid at an assumed MFU
    python scripts/gpu_hours.py --measured results/bench/gpu_<date>.json   # measured tokens/s where there is one
    python scripts/gpu_hours.py --experiment paper_grid train.tokens_per_stage=8388608

Per run: training on every domain of the sequence (``tokens_per_stage`` each) and perplexity on
every domain after every stage (``val_tokens`` each, stages 0..T). FLOPs per token follow
benchmarks/gpu.py (6N + 12LdT full FT, 4N + 12LdT frozen-base methods, 2N + 4LdT evaluation); the
model shapes are built on the meta device from each model's published config.json. Time is
FLOPs / (MFU x 989 TFLOP/s, H200 bf16), or tokens / measured tokens/s for a model and method that
``--measured`` (benchmarks/gpu.py's output) has. lm-eval, loading and absorbing are not counted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu import ARCHITECTURES, PEAK_FLOPS, build, flops_per_token, shape_of  # noqa: E402

# gainbench model config -> architecture (the published config.json of its name_or_path)
MODELS = {
    "gpt2-large": ARCHITECTURES["gpt2-large"],
    "qwen2.5": ARCHITECTURES["qwen2.5-7b"],
    "mistral": dict(model_type="mistral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                    tie_word_embeddings=False),
    "llama2-13b": dict(model_type="llama", vocab_size=32000, hidden_size=5120, intermediate_size=13824,
                       num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40,
                       tie_word_embeddings=False),
    "llama2-70b": dict(model_type="llama", vocab_size=32000, hidden_size=8192, intermediate_size=28672,
                       num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                       tie_word_embeddings=False),
}
PUBLISHED_TOTAL = {"gpt2-large": 774_030_080, "qwen2.5": 7_615_616_512, "mistral": 7_241_732_096,
                   "llama2-13b": 13_015_864_320, "llama2-70b": 68_976_648_192}
# benchmarks/gpu.py's model names, for --measured
MEASURED_NAME = {"gpt2-large": "gpt2-large", "qwen2.5": "qwen2.5-7b"}
FULL_MODEL_METHODS = {"full_ft", "ewc"}  # every weight trains: weight gradients too


def budget(overrides: list[str]) -> dict:
    from gainbench.cli import compose_settings

    settings = compose_settings(overrides)
    stages = len(settings.domains)
    return {"stages": stages, "seq_len": settings.seq_len,
            "train_tokens": stages * settings.train_tokens,
            "eval_tokens": (stages + 1) * stages * settings.val_tokens}


def measured_throughput(path: Path | None) -> dict:
    """(benchmark model name, method) -> harness tokens/s measured by benchmarks/gpu.py."""
    if path is None:
        return {}
    rows = json.loads(path.read_text())["rows"]
    return {(r["model"], r["method"]): r["harness_tokens_per_s"] for r in rows
            if r.get("harness_tokens_per_s")}


def estimate(models, methods, plan: dict, mfu: float, measured: dict) -> list[dict]:
    rows = []
    for model in models:
        with torch.device("meta"):
            shape = shape_of(build(MODELS[model], "meta", torch.bfloat16))
        assert shape["total_params"] == PUBLISHED_TOTAL[model], (model, shape["total_params"])
        seq = plan["seq_len"]

        def seconds(tokens, mode, method):
            rate = measured.get((MEASURED_NAME.get(model), method))
            if rate:
                return tokens / rate, "measured"
            return tokens * flops_per_token(shape, seq, mode) / (mfu * PEAK_FLOPS), f"{mfu:.0%} MFU"

        eval_s, eval_basis = seconds(plan["eval_tokens"], "eval", "eval")
        for method in methods:
            mode = "full" if method in FULL_MODEL_METHODS else "frozen"
            train_s, train_basis = seconds(plan["train_tokens"], mode, method)
            rows.append({"model": model, "method": method, "params": shape["total_params"],
                         "train_h": train_s / 3600, "eval_h": eval_s / 3600,
                         "gpu_hours": (train_s + eval_s) / 3600,
                         "basis": train_basis if train_basis == eval_basis else f"{train_basis}/{eval_basis}"})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="paper_grid")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=["gain", "gain_ffn", "lora", "full_ft"])
    parser.add_argument("--mfu", type=float, default=0.4,
                        help="assumed model FLOPs utilisation where nothing was measured (gpu.py's target)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--measured", type=Path, help="a benchmarks/gpu.py results JSON")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for python -m gainbench")
    args = parser.parse_args()

    plan = budget([f"experiment={args.experiment}", *args.overrides])
    rows = estimate(args.models, args.methods, plan, args.mfu, measured_throughput(args.measured))
    print(f"experiment={args.experiment}: {plan['stages']} stages, {plan['train_tokens'] / 1e6:.0f}M "
          f"train + {plan['eval_tokens'] / 1e6:.1f}M eval tokens per run, seq {plan['seq_len']}; "
          "H200 bf16, lm-eval not counted")
    print("| model | params | " + " | ".join(args.methods) + " | basis |")
    print("|---|---|" + "---|" * len(args.methods) + "---|")
    for model in args.models:
        mine = [r for r in rows if r["model"] == model]
        print(f"| {model} | {mine[0]['params'] / 1e9:.2f}B | "
              + " | ".join(f"{r['gpu_hours']:.1f}" for r in mine) + f" | {mine[0]['basis']} |")
    total = sum(r["gpu_hours"] for r in rows) * args.seeds
    print(f"grid: {len(args.models)} models x {len(args.methods)} methods x {args.seeds} seeds = "
          f"{total:,.0f} GPU-hours")


if __name__ == "__main__":
    main()

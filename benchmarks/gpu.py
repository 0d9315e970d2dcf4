"""GPU training/evaluation throughput and MFU of each method, for one NVIDIA H200 (bf16). NOT YET RUN ON A GPU.

    python benchmarks/gpu.py              # on the H200: gpt2-large and Qwen2.5-7B architectures (< 5 min)
    python benchmarks/gpu.py --dry-run    # anywhere: build both on the meta device, print the plan and FLOPs
    python benchmarks/gpu.py --quick      # anywhere, CPU included: the whole code path on tiny configs
    python benchmarks/gpu.py --models qwen2.5-7b --methods gain lora --reps 3

Targets (issue 8): MFU >= 40% for GAIN/LoRA training of the 7B architecture; GAIN's step time <=
LoRA's.

What runs. Random-init models with the exact architectures of gpt2-large and Qwen2.5-7B, built
from transformers configs written out below (the hub cannot be reached; the values are those of
tests/models/test_param_counts.py, and the built parameter counts are checked against the
published totals), in bf16 with PyTorch SDPA attention. Sequence 2048 tokens for Qwen2.5-7B; 1024
for gpt2-large, whose position table has 1024 entries (its batch is doubled so a step has the same
8,192 tokens). Per model: evaluation tokens/s of the harness's ``validation_nll``; then for GAIN,
GAIN-FFN, LoRA and full FT, each attached through the gainbench registry with its YAML options
and absorbed after: one warm-up stage, then ``--reps`` interleaved rounds of (a) the harness's
``train_stage`` for ``--steps`` steps (batches copied from the CPU per step, as a stage does), (b) a
bare loop (batches already on the GPU; forward, backward, AdamW step, zero_grad; no host sync) and
(c) the bare loop plus ``loss.item()`` every step, which isolates what a per-step host sync costs. Step time, tokens/s, MFU, ``torch.cuda.max_memory_allocated`` and the
ratios harness/bare and bare+sync/bare. A time budget (``--budget-s``, default 270 s after start)
skips what is left rather than overrunning.

Full fine-tuning of the 7B (memory): plain torch AdamW on bf16 parameters keeps its two states in
bf16 (no fp32 master copy; 15 + 15 + 30 GB for weights, gradients and states), which is a timing
set-up, not a recipe for a real run. It starts at batch 2 (4,096 tokens per step); on an
out-of-memory error it retries at half the batch and, at batch 1, with activation checkpointing
(recomputation is not counted as model FLOPs, so MFU then drops by about a quarter). The JSON
records what was used.

FLOPs (PaLM appendix B convention; no discount for the causal mask). ``N`` counts the weights of
every matmul: all ``nn.Linear``/``Conv1D`` weights including the LM head, not the input embedding
(a lookup). With ``L`` layers, attention width ``d`` and sequence ``T``, per token:

    full FT training       6N + 12 L d T    (forward 2N, backward 2N activation + 2N weight gradients)
    GAIN / LoRA training   4N + 12 L d T    (frozen base: no weight gradients; attention has no
                                             weights, so its backward is all activation gradients;
                                             the scales' and the rank-8 factors' own FLOPs, < 0.5%,
                                             are left out)
    evaluation             2N +  4 L d T

MFU = FLOPs per token x tokens/s / 989e12 (H200 dense bf16 peak); ``mfu_measured_peak`` divides by
the peak measured at the start instead (an 8192^3 bf16 matmul, about 790 TFLOP/s on the H200 here),
what the device can actually give a large matmul. Writes gpu_<date>.json under
--out (default results/bench/; --quick writes gpu_quick_<date>.json, --dry-run gpu_plan.json).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import time

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # before CUDA starts

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import _bench  # noqa: E402

PEAK_FLOPS = 989e12  # H200 SXM dense bf16 (no sparsity)

# Written out from the published config.json of each model (checked by the totals below).
ARCHITECTURES = {  # the 7B first: its numbers are the targets, should the time budget run out
    # Qwen/Qwen2.5-7B
    "qwen2.5-7b": dict(model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                       num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       max_position_embeddings=131072, tie_word_embeddings=False, rope_theta=1e6,
                       rms_norm_eps=1e-6),
    # openai-community/gpt2-large
    "gpt2-large": dict(model_type="gpt2", vocab_size=50257, n_positions=1024, n_embd=1280, n_layer=36,
                       n_head=20),
}
PUBLISHED_TOTAL = {"gpt2-large": 774_030_080, "qwen2.5-7b": 7_615_616_512}
# sequence, train batch (full FT batch), eval batch
SHAPES = {"gpt2-large": (1024, 8, 8, 8), "qwen2.5-7b": (2048, 4, 2, 4)}

# --quick: the same two families, tiny, so the whole path runs on a CPU in seconds
TINY = {
    "tiny-gpt2": dict(model_type="gpt2", vocab_size=512, n_positions=64, n_embd=64, n_layer=2, n_head=4),
    "tiny-qwen2": dict(model_type="qwen2", vocab_size=512, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=64, tie_word_embeddings=False),
}
TINY_SHAPES = {"tiny-gpt2": (32, 2, 2, 2), "tiny-qwen2": (32, 2, 2, 2)}


def build(dims: dict, device, dtype):
    from transformers import AutoConfig, AutoModelForCausalLM

    dims = dict(dims)
    config = AutoConfig.for_model(dims.pop("model_type"), **dims)
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def measure_peak_flops(device, n: int = 8192, reps: int = 10) -> float | None:
    """bf16 FLOP/s of an ``n``-cube matmul on random data (mean of ``reps`` after 3 warm-ups):
    the practical ceiling MFU is also read against. None off CUDA."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    flops = 2 * n ** 3 * reps / (time.perf_counter() - start)
    del a, b
    torch.cuda.empty_cache()
    return flops


def shape_of(model) -> dict:
    config = model.config
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    width = getattr(config, "hidden_size", None) or config.n_embd
    from transformers.pytorch_utils import Conv1D

    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, Conv1D)))
    return {"layers": layers, "attn_width": width, "matmul_params": matmul,
            "total_params": sum(p.numel() for p in model.parameters())}


def flops_per_token(shape: dict, seq: int, mode: str) -> float:
    n, attention = shape["matmul_params"], shape["layers"] * shape["attn_width"] * seq
    return {"full": 6 * n + 12 * attention, "frozen": 4 * n + 12 * attention,
            "eval": 2 * n + 4 * attention}[mode]


def bare_loop(model, params, blocks, lr, batch_size, sync_each_step):
    """The floor: ``blocks`` already on the device, no host sync unless asked for."""
    optimizer = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(len(blocks) // batch_size):
        batch = blocks[step * batch_size:(step + 1) * batch_size]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if sync_each_step:
            loss.item()


def train_method(model, name, shape, seq, batch, args, device):
    from gainbench.training.loop import TrainSettings, train_stage

    method = _bench.make_registered_method(name)
    lr = _bench.method_config(name)[0]
    torch.manual_seed(1)
    adapted = method.attach(model)
    params = method.trainable_parameters(adapted)
    vocab = model.config.vocab_size
    row = {"method": name, "batch": batch, "seq": seq, "tokens_per_step": batch * seq,
           "trainable_params": sum(p.numel() for p in params.values()), "checkpointing": False}
    while True:
        blocks = _bench.random_blocks(vocab, args.steps * batch, seq)  # on the CPU, as a stage gets them
        resident = blocks.to(device)
        settings = TrainSettings(lr=lr, batch_size=batch)
        fns = {
            "harness": lambda: train_stage(adapted, params, blocks, settings, seed=1,
                                           exempt_from_weight_decay=method.exempt_from_weight_decay,
                                           regularization=lambda: method.regularization(adapted),
                                           desc=f"gpu {name}"),
            "bare": lambda: bare_loop(adapted, params, resident, lr, batch, False),
            "bare_sync": lambda: bare_loop(adapted, params, resident, lr, batch, True),
        }
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times = _bench.interleaved(fns, reps=args.reps, warmup=1)
            break
        except torch.OutOfMemoryError:
            if name != "full_ft" or row["checkpointing"]:
                raise
        # out of the except block, so its traceback no longer holds the activations
        del fns, resident
        for p in params.values():
            p.grad = None
        gc.collect()
        torch.cuda.empty_cache()
        if batch > 1:
            batch //= 2
        else:
            adapted.gradient_checkpointing_enable()
            row["checkpointing"] = True
        row.update(batch=batch, tokens_per_step=batch * seq)
        print(f"  {name}: out of memory, retrying at batch {batch}"
              + (" with activation checkpointing" if row["checkpointing"] else ""))
    tokens = args.steps * batch * seq
    mode = "full" if name == "full_ft" else "frozen"
    for side, t in times.items():
        s = _bench.spread(t)
        row[f"{side}_step_s"] = s["median"] / args.steps
        row[f"{side}_spread"] = s["spread"]
        row[f"{side}_tokens_per_s"] = tokens / s["median"]
        row[f"{side}_seconds"] = t
    row["flops_per_token"] = flops_per_token(shape, seq, mode)
    row["flops_formula"] = "6N + 12LdT" if mode == "full" else "4N + 12LdT"
    row["mfu"] = row["flops_per_token"] * row["harness_tokens_per_s"] / PEAK_FLOPS
    row["harness_over_bare"] = _bench.paired_ratios(times["bare"], times["harness"])["median"]
    row["sync_over_bare"] = _bench.paired_ratios(times["bare"], times["bare_sync"])["median"]
    row["peak_memory_gib"] = (torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda"
                              else None)
    if row["checkpointing"]:
        adapted.gradient_checkpointing_disable()
    return method.absorb(adapted), row


def evaluate(model, shape, seq, batch, args, device):
    from gainbench.evaluation.perplexity import validation_nll

    blocks = _bench.random_blocks(model.config.vocab_size, args.eval_batches * batch, seq)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = _bench.interleaved({"eval": lambda: validation_nll(model, blocks, 1, batch)},
                               reps=args.reps, warmup=1)["eval"]
    s = _bench.spread(times)
    tokens_per_s = blocks.numel() / s["median"]
    return {"method": "eval", "batch": batch, "seq": seq, "tokens_per_step": batch * seq,
            "harness_tokens_per_s": tokens_per_s, "harness_spread": s["spread"],
            "harness_seconds": times, "flops_per_token": flops_per_token(shape, seq, "eval"),
            "flops_formula": "2N + 4LdT",
            "mfu": flops_per_token(shape, seq, "eval") * tokens_per_s / PEAK_FLOPS,
            "peak_memory_gib": (torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda"
                                else None)}


def dry_run(args):
    rows = []
    for name in args.models:
        with torch.device("meta"):
            model = build(ARCHITECTURES[name], "meta", torch.bfloat16)
        shape = shape_of(model)
        assert shape["total_params"] == PUBLISHED_TOTAL[name], (name, shape["total_params"])
        seq, batch, full_batch, eval_batch = SHAPES[name]
        for method in list(args.methods) + ["eval"]:
            mode = {"full_ft": "full", "eval": "eval"}.get(method, "frozen")
            rows.append({"model": name, "method": method, "total_params": shape["total_params"],
                         "matmul_params_N": shape["matmul_params"], "seq": seq,
                         "batch": {"full_ft": full_batch, "eval": eval_batch}.get(method, batch),
                         "flops_per_token": flops_per_token(shape, seq, mode),
                         "tokens_per_s_at_40pct_mfu": 0.4 * PEAK_FLOPS / flops_per_token(shape, seq, mode)})
    _bench.print_table(
        [{**r, "GFLOP/token": f"{r['flops_per_token'] / 1e9:.2f}",
          "tokens/s at 40% MFU": f"{r['tokens_per_s_at_40pct_mfu']:.0f}"} for r in rows],
        ["model", "method", "total_params", "matmul_params_N", "seq", "batch", "GFLOP/token",
         "tokens/s at 40% MFU"],
        title="gpu.py --dry-run: the plan (exact architectures on the meta device; nothing timed)")
    _bench.write_results(args.out, "gpu_plan", rows, settings=vars(args) | {"out": str(args.out)},
                         peak_flops=PEAK_FLOPS)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES))
    parser.add_argument("--methods", nargs="+", default=list(_bench.METHODS))
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per timed stage")
    parser.add_argument("--eval-batches", type=int, default=4)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--budget-s", type=float, default=270.0)
    args = _bench.add_common_args(parser, reps=2).parse_args()
    _bench.setup(args)
    if args.dry_run:
        return dry_run(args)
    start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    architectures, shapes = (TINY, TINY_SHAPES) if args.quick else (ARCHITECTURES, SHAPES)
    if args.quick:
        args.models, args.steps, args.eval_batches = list(TINY), 2, 2
    elif device.type != "cuda":  # a 7B in bf16 is 15 GB of weights: not something to start on a CPU
        raise SystemExit("gpu.py: no GPU here; the full run needs one (--quick or --dry-run run on a CPU)")

    measured_peak = measure_peak_flops(device)
    if measured_peak:
        print(f"measured bf16 matmul peak: {measured_peak / 1e12:.0f} TFLOP/s "
              f"({100 * measured_peak / PEAK_FLOPS:.0f}% of the {PEAK_FLOPS / 1e12:.0f} TFLOP/s spec)")
    rows, skipped = [], []
    stem = ("gpu_quick_" if args.quick else "gpu_") + time.strftime("%Y-%m-%d")

    def save(**final):
        """The JSON as it stands; written after every row (quietly), so a run stopped from
        outside (gpu_check.sh's timeout) keeps what it measured; ``complete`` once at the end."""
        for row in rows:
            if measured_peak and row.get("mfu") is not None:
                row["mfu_measured_peak"] = row["mfu"] * PEAK_FLOPS / measured_peak
        with contextlib.nullcontext() if final else contextlib.redirect_stdout(io.StringIO()):
            _bench.write_results(args.out, stem, rows, settings=vars(args) | {"out": str(args.out)},
                                 device=str(device), peak_flops=PEAK_FLOPS,
                                 measured_peak_flops=measured_peak, skipped=skipped,
                                 wall_s=time.perf_counter() - start, complete=bool(final), **final)

    for name in args.models:
        if time.perf_counter() - start > args.budget_s:
            skipped.append(name)
            continue
        seq, batch, full_batch, eval_batch = shapes[name]
        t0 = time.perf_counter()
        try:
            model = build(architectures[name], device, dtype)
            shape = shape_of(model)
            if name in PUBLISHED_TOTAL:
                assert shape["total_params"] == PUBLISHED_TOTAL[name], (name, shape["total_params"])
            print(f"{name}: built {shape['total_params']:,} parameters in {time.perf_counter() - t0:.1f} s")
            rows.append({"model": name, **evaluate(model, shape, seq, eval_batch, args, device)})
        except Exception as err:  # the next model may still run
            rows.append({"model": name, "method": "eval", "error": f"{type(err).__name__}: {err}"})
            print(f"{name}: failed ({rows[-1]['error'][:200]}); skipping it")
            model = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            save()
            continue
        save()
        for method in args.methods:
            if time.perf_counter() - start > args.budget_s:
                skipped.append(f"{name}/{method}")
                continue
            try:
                model, row = train_method(model, method, shape, seq,
                                          full_batch if method == "full_ft" else batch, args, device)
            except Exception as err:  # keep what was measured; the model may be half-attached now
                rows.append({"model": name, "method": method, "error": f"{type(err).__name__}: {err}"})
                print(f"  {method}: failed ({rows[-1]['error'][:200]}); skipping {name}'s other methods")
                save()
                break
            rows.append({"model": name, **row})
            save()
            print(f"  {method}: {row['harness_step_s']:.3f} s/step, MFU {100 * row['mfu']:.1f}%")
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    save()  # mfu_measured_peak on every row

    def fmt(row, key, spec, scale=1.0):
        return "" if row.get(key) is None else format(row[key] * scale, spec)

    _bench.print_table(
        [{**r, "s/step": fmt(r, "harness_step_s", ".3f"), "tokens/s": fmt(r, "harness_tokens_per_s", ".0f"),
          "MFU %": fmt(r, "mfu", ".1f", 100), "MFU % of measured": fmt(r, "mfu_measured_peak", ".1f", 100),
          "harness/bare": fmt(r, "harness_over_bare", ".3f"),
          "sync/bare": fmt(r, "sync_over_bare", ".3f"), "peak GiB": fmt(r, "peak_memory_gib", ".1f"),
          "error": r.get("error", "")[:60]} for r in rows],
        ["model", "method", "batch", "seq", "trainable_params", "s/step", "tokens/s", "MFU %",
         "MFU % of measured", "harness/bare", "sync/bare", "peak GiB", "error"],
        title=f"gpu.py ({device}, {args.dtype}, {args.steps} steps/stage, {args.reps} reps; MFU against "
              f"{PEAK_FLOPS / 1e12:.0f} TFLOP/s; targets: 7B GAIN/LoRA MFU >= 40%, GAIN s/step <= LoRA's)")
    if skipped:
        print(f"skipped (time budget {args.budget_s:.0f} s): {', '.join(skipped)}")
    done = [r for r in rows if "error" not in r]
    gain = {r["model"]: r["harness_step_s"] for r in done if r["method"] == "gain"}
    lora = {r["model"]: r["harness_step_s"] for r in done if r["method"] == "lora"}
    targets = {m: {"gain_step_le_lora": gain[m] <= lora[m]} for m in gain if m in lora}
    for m, r in ((r["model"], r) for r in done if r["method"] in ("gain", "lora")):
        targets.setdefault(m, {})[f"{r['method']}_mfu_ge_40pct"] = r["mfu"] >= 0.4
        if "mfu_measured_peak" in r:
            targets[m][f"{r['method']}_mfu_of_measured_peak_ge_40pct"] = r["mfu_measured_peak"] >= 0.4
    for m, t in targets.items():
        print(f"targets {m}: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in t.items()))
    save(targets=targets, median_note="step times are medians over reps; ratios paired per round")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

"""Zero inference cost of GAIN after absorption: a trained, absorbed GAIN-FFN model vs the base model.

    python benchmarks/absorbed_inference.py [--model smollm2|tiny] [--batch-size 4] [--seq-len 128]
                                            [--reps 5] [--threads 1] [--quick] [--out DIR]
    python benchmarks/absorbed_inference.py --model qwen2.5-7b --device cuda --dtype bfloat16 \
                                            --seq-len 2048      # on a GPU (benchmarks/gpu_check.sh)

``--model gpt2-large`` or ``qwen2.5-7b``: random-init models of those exact architectures
(benchmarks/gpu.py's), built on ``--device`` in ``--dtype``: the latency of a paper-sized
model without its weights (the embedded SmolLM2 is the only real checkpoint here);
``tiny-gpt2``/``tiny-qwen2`` take the same path at toy size (gpu_check.sh --dry-run).

GAIN-FFN is attached through the registry and trained for a short stage at a high learning rate
(so its scales are clearly not 1), then absorbed. Compared with the untouched base model:

* parameter count and state-dict keys, shapes and dtypes: must be identical (checked, printed);
* max |logit difference| between the wrapped model (before absorption) and the absorbed one on
  the same batch: absorption must not change the function beyond float rounding;
* forward latency (``inference_mode``, eval): base, absorbed and, for scale, the still-wrapped
  model, interleaved after a warm-up; ratio absorbed/base per round (expected 1.00 within noise).

Prints the checks and a table; writes absorbed_inference.json/.csv under --out (default results/bench/);
a model other than smollm2/tiny, or a device other than the CPU, is named in the file:
absorbed_inference_<model>_<device>.json.
"""

from __future__ import annotations

import argparse
import copy

import torch

import _bench
from gpu import ARCHITECTURES, TINY, build
from gainbench.methods import count_parameters
from gainbench.methods.gain import gain_modules
from gainbench.training.loop import TrainSettings, train_stage


def signature(model) -> dict[str, tuple]:
    return {k: (tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", choices=["smollm2", "tiny", *ARCHITECTURES, *TINY])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:1 ...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-2, help="high, so the scales move visibly")
    args = _bench.add_common_args(parser, reps=5).parse_args()
    if args.quick:  # a toy model: the tiny Llama, or a toy of the paper shapes if one is named
        args.model, args.seq_len = (args.model if args.model in TINY else "tiny"), 32
    _bench.setup(args)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.model in ARCHITECTURES or args.model in TINY:
        base = build({**ARCHITECTURES, **TINY}[args.model], device, dtype).eval()
        vocab = base.config.vocab_size
    else:
        base, vocab = _bench.load_model(args.model)
        base = base.to(device, dtype)
    trained = copy.deepcopy(base)
    method = _bench.make_registered_method("gain_ffn")
    trained = method.attach(trained)
    params = method.trainable_parameters(trained)
    train_blocks = _bench.random_blocks(vocab, args.train_steps * args.batch_size, args.seq_len, seed=1)
    train_stage(trained, params, train_blocks, TrainSettings(lr=args.lr, batch_size=args.batch_size,
                                                             schedule="constant"), seed=1,
                exempt_from_weight_decay=True)
    scales = torch.cat([m.gain().detach() for m in gain_modules(trained).values()])
    wrapped = copy.deepcopy(trained)  # kept wrapped: the cost of not absorbing, for comparison
    wrapped.eval()

    batch = _bench.random_blocks(vocab, args.batch_size, args.seq_len, seed=2).to(device)
    with torch.inference_mode():
        before = trained.eval()(input_ids=batch).logits
        absorbed = method.absorb(trained).eval()
        after = absorbed(input_ids=batch).logits
    max_diff = (after - before).abs().max().item()

    checks = {
        "same parameter count": count_parameters(absorbed.parameters()) == count_parameters(base.parameters()),
        "same state-dict keys, shapes, dtypes": signature(absorbed) == signature(base),
        "no wrapper left": not gain_modules(absorbed),
        "weights changed by absorption": any(not torch.equal(a, b) for a, b in
                                             zip(absorbed.state_dict().values(), base.state_dict().values())),
    }
    print(f"GAIN-FFN scales after training: {scales.numel()} entries, max |s - 1| = "
          f"{(scales - 1).abs().max().item():.4f}, mean |s - 1| = {(scales - 1).abs().mean().item():.4f}")
    print(f"parameters: base {count_parameters(base.parameters()):,}, absorbed "
          f"{count_parameters(absorbed.parameters()):,}; state-dict entries: {len(signature(base))}")
    print(f"max |logit difference| wrapped vs absorbed: {max_diff:.3e} "
          f"(logits up to {before.abs().max().item():.1f} in magnitude)")
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {name}")

    def forward(model):
        def run():
            with torch.inference_mode():
                model(input_ids=batch)
        return run

    base.eval()
    times = _bench.interleaved({"base": forward(base), "absorbed": forward(absorbed),
                                "wrapped": forward(wrapped)}, reps=args.reps, warmup=1)
    rows = []
    for name, t in times.items():
        s = _bench.spread(t)
        ratio = _bench.paired_ratios(t, times["base"])
        rows.append({"model_variant": name, "model": args.model, "forward_s": s["median"],
                     "forward_spread": s["spread"], "tokens_per_s": batch.numel() / s["median"],
                     "latency_vs_base": ratio["median"], "latency_vs_base_min": ratio["min"],
                     "latency_vs_base_max": ratio["max"], "params": count_parameters(
                         {"base": base, "absorbed": absorbed, "wrapped": wrapped}[name].parameters()),
                     "seconds": t})
    _bench.print_table(
        [{**r, "forward s": f"{r['forward_s']:.4f}",
          "latency vs base [min-max]": _bench.fmt_ratio({"median": r["latency_vs_base"],
                                                         "min": r["latency_vs_base_min"],
                                                         "max": r["latency_vs_base_max"]})} for r in rows],
        ["model_variant", "params", "forward s", "latency vs base [min-max]"],
        title=f"forward latency ({args.model}, {device}, {args.dtype}, batch {args.batch_size}x{args.seq_len}, {args.reps} reps, "
              "paired per round; absorbed/base expected 1.00)")
    named = args.model not in ("smollm2", "tiny") or device.type != "cpu"
    stem = f"absorbed_inference_{args.model}_{device.type}" if named else "absorbed_inference"
    _bench.write_results(args.out, stem, rows, settings=vars(args) | {"out": str(args.out)},
                         checks=checks, max_abs_logit_diff=max_diff,
                         max_abs_scale_minus_one=(scales - 1).abs().max().item(),
                         n_scales=scales.numel(), device=str(device), dtype=args.dtype)
    if not all(checks.values()):
        raise SystemExit("absorbed_inference: a check failed (see above)")


if __name__ == "__main__":
    main()

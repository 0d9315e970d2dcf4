"""Training-step overhead: gainbench's ``train_stage`` vs a bare PyTorch loop, per method.

    python benchmarks/train_step.py [--model smollm2|tiny] [--steps 2] [--batch-size 4]
                                    [--seq-len 64] [--reps 3] [--threads 1] [--quick] [--out DIR]

For each of gain, gain_ffn, lora and full_ft the method is attached through the registry with its
YAML options, as the protocol does. Both sides then train that same model on the same batches in
the same order, for the same number of steps:

* harness: ``gainbench.training.loop.train_stage`` (seeded RNG fork, AdamW, cosine schedule with
  warm-up, gradient clipping, the per-step NaN check and loss bookkeeping, tqdm);
* bare: ``model(input_ids, labels).loss.backward(); AdamW.step(); zero_grad()`` and nothing else.

``train_stage`` runs a whole stage, so whole short stages are timed on both sides (each side builds
its AdamW inside the timed region, as a stage does). One warm-up round, then ``--reps`` rounds
interleaved (A B, B A, ...). Prints the median step time of each side and the ratio
harness/bare throughput (= bare time / harness time, per round; target >= 0.95).

Two side measurements answer "is the step itself lean": the optimizer step alone with each
AdamW implementation torch offers here (for-loop, foreach, fused) on the method's trainable
tensors, with whether each gives bit-identical weights to the one torch picks by default; and the
cost of the harness's per-step host sync (``torch.isfinite(loss)`` in an ``if`` plus
``loss.item()``). Writes train_step.json/.csv under --out (default results/bench/).
"""

from __future__ import annotations

import argparse
import gc
import time

import torch
from torch.optim.optimizer import _default_to_fused_or_foreach

import _bench
from gainbench.training.loop import TrainSettings, train_stage

SEED = 1


def bare_loop(model, params, blocks, lr, batch_size):
    optimizer = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=0.0)
    # the batches and their order exactly as train_stage draws them
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(SEED))
    model.train()
    for step in range(len(blocks) // batch_size):
        batch = blocks[order[step * batch_size:(step + 1) * batch_size]]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


ADAMW_VARIANTS = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}


def adamw_variants(params, lr, reps):
    """Seconds per ``AdamW.step()`` of each implementation on copies of ``params`` with the same
    synthetic gradients, and whether each ends bit-identical to torch's default pick."""
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=generator) * 1e-3 for p in params]
    fused, foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)
    default = "fused" if fused else "foreach" if foreach else "for-loop"
    copies, optimizers = {}, {}
    for name, kwargs in ADAMW_VARIANTS.items():
        copies[name] = [p.detach().clone().requires_grad_(True) for p in params]
        for copy, grad in zip(copies[name], grads):
            copy.grad = grad.clone()
        optimizers[name] = torch.optim.AdamW(copies[name], lr=lr, weight_decay=0.0, **kwargs)
    times = _bench.interleaved({n: o.step for n, o in optimizers.items()}, reps=reps, warmup=1)
    return {name: {"step_s": _bench.spread(t)["median"], "default": name == default,
                   "vs_default": _bench.paired_ratios(t, times[default])["median"],
                   "bit_identical_to_default": all(torch.equal(a, b) for a, b in
                                                   zip(copies[name], copies[default]))}
            for name, t in times.items()}


def host_sync_cost(n: int = 2000) -> float:
    """Seconds per step of the harness's NaN check and loss read-back, on a scalar loss."""
    loss = torch.tensor(2.5, requires_grad=True) * 1.0
    start = time.perf_counter()
    for _ in range(n):
        if not torch.isfinite(loss):
            raise AssertionError
        loss.item()
    return (time.perf_counter() - start) / n


def bench_method(name, args):
    model, vocab = _bench.load_model(args.model)
    method = _bench.make_registered_method(name)
    lr, _ = _bench.method_config(name)
    torch.manual_seed(SEED)  # adapter initialisation, as the protocol seeds it
    adapted = method.attach(model)
    params = method.trainable_parameters(adapted)
    blocks = _bench.random_blocks(vocab, args.steps * args.batch_size, args.seq_len)
    settings = TrainSettings(lr=lr, batch_size=args.batch_size)

    def harness():
        train_stage(adapted, params, blocks, settings, seed=SEED,
                    exempt_from_weight_decay=method.exempt_from_weight_decay,
                    regularization=lambda: method.regularization(adapted), desc=f"bench {name}")

    times = _bench.interleaved({"harness": harness,
                                "bare": lambda: bare_loop(adapted, params, blocks, lr, args.batch_size)},
                               reps=args.reps, warmup=1)
    tokens = blocks.numel()
    row = {"method": name, "model": args.model, "steps": args.steps, "batch_size": args.batch_size,
           "seq_len": args.seq_len, "trainable_params": sum(p.numel() for p in params.values())}
    for side, t in times.items():
        s = _bench.spread(t)
        row[f"{side}_step_s"] = s["median"] / args.steps
        row[f"{side}_tokens_per_s"] = tokens / s["median"]
        row[f"{side}_spread"] = s["spread"]
        row[f"{side}_seconds"] = t
    ratio = _bench.paired_ratios(times["bare"], times["harness"])
    row.update(ratio_harness_over_bare=ratio["median"], ratio_min=ratio["min"], ratio_max=ratio["max"])
    row["adamw"] = adamw_variants(list(params.values()), lr, max(args.reps, 3))
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args = _bench.add_training_step_args(parser).parse_args()
    _bench.quick_training_step(args)
    _bench.setup(args)

    rows = []
    for name in args.methods:
        rows.append(bench_method(name, args))
        gc.collect()  # this method's model goes before the next one loads
    _bench.print_table(
        [{**r, "harness s/step": f"{r['harness_step_s']:.3f}", "bare s/step": f"{r['bare_step_s']:.3f}",
          "harness/bare [min-max]": _bench.fmt_ratio({"median": r["ratio_harness_over_bare"],
                                                      "min": r["ratio_min"], "max": r["ratio_max"]})}
         for r in rows],
        ["method", "trainable_params", "harness s/step", "bare s/step", "harness/bare [min-max]"],
        title=f"train_stage vs bare loop ({args.model}, {args.batch_size}x{args.seq_len} tokens/step, "
              f"{args.steps} steps/stage, {args.reps} reps; throughput ratio, target >= 0.95)")
    _bench.print_table(
        [{"method": r["method"], **{f"{v} ms": f"{a['step_s'] * 1e3:.2f}" + (" (default)" if a["default"] else "")
                                    for v, a in r["adamw"].items()},
          **{f"{v} bit-identical": a["bit_identical_to_default"] for v, a in r["adamw"].items()
             if not a["default"]}} for r in rows],
        ["method"] + [f"{v} ms" for v in ADAMW_VARIANTS]
        + [f"{v} bit-identical" for v in ADAMW_VARIANTS if not rows[0]["adamw"][v]["default"]],
        title="AdamW.step() alone on the trainable tensors, per implementation (median)")
    sync = host_sync_cost()
    print(f"per-step NaN check + loss.item() on this device: {sync * 1e6:.1f} us "
          f"({100 * sync / min(r['harness_step_s'] for r in rows):.4f}% of the fastest step)")
    _bench.write_results(args.out, "train_step", rows, settings=vars(args) | {"out": str(args.out)},
                         host_sync_seconds_per_step=sync)


if __name__ == "__main__":
    main()

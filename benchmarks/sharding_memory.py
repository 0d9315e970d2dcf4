"""What each rank holds for training under train.strategy=single, ddp and fsdp (with and
without train.shard_weights), and its step time.

    python benchmarks/sharding_memory.py [--model smollm2|tiny] [--methods full_ft gain_ffn] [--quick]

For each strategy it launches ``torchrun --standalone --nproc_per_node=2`` (``single``: one
process) running gainbench's own training path (``gainbench.training.parallel.for_training`` and
the loop's micro-batched step) on the same global batch, and reports per rank: the bytes of the
trainable tensors it holds, of their gradients and of the AdamW moments (local shards under
FSDP), the bytes of the model's weights it holds (``fsdp_sharded_weights``: its shard; otherwise
the whole model, kept for evaluation), its peak resident memory (largest rank, and largest rank
other than rank 0, which reads the checkpoint whole), and the median step time. Every
rank has ``--threads`` intra-op threads (default 1), so 2 ranks use twice the cores of one
process: the times show what splitting a batch costs and saves, not a like-for-like speed-up.
Writes sharding_memory.json/.csv.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _bench

STRATEGIES = ("single", "ddp", "fsdp", "fsdp_sharded_weights")


def _local_bytes(tensor) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def worker(args) -> None:
    import resource

    import torch

    from gainbench.distributed import close, init_ranks
    from gainbench.training.loop import TrainSettings, _forward_backward
    from gainbench.training.parallel import for_training
    from gainbench.training.sharding import on_sharded_weights, shard_model

    sharded = args.strategy == "fsdp_sharded_weights"
    settings = TrainSettings(lr=1e-5, batch_size=args.batch_size, shard_weights=sharded,
                             strategy="fsdp" if sharded else args.strategy)
    ranks = init_ranks(settings.strategy)
    if sharded:  # as the protocol does: rank 0 reads the weights, each rank keeps its shard
        loaded, vocab = _bench.load_model(args.model) if ranks.is_main else (None, None)
        model, vocab = shard_model(loaded, ranks, torch.device("cpu")), ranks.broadcast(vocab)
        del loaded
    else:
        model, vocab = _bench.load_model(args.model)
    method = _bench.make_registered_method(args.method)
    torch.manual_seed(0)
    with on_sharded_weights(model):
        adapted = method.attach(model)
    params = method.trainable_parameters(adapted)
    weights = sum(_local_bytes(p) for p in adapted.parameters())
    trained = for_training(adapted, params, settings.strategy, ranks)
    optimizer = torch.optim.AdamW(list(trained.params.values()), lr=settings.lr)
    blocks = _bench.random_blocks(vocab, args.batch_size * (args.steps + 1), args.seq_len)
    trained.module.train()
    times, grads = [], 0
    for step in range(args.steps + 1):  # the first step is a warm-up
        batch = torch.arange(step * args.batch_size, (step + 1) * args.batch_size)
        start = time.perf_counter()
        _forward_backward(trained, blocks, batch, settings, ranks, None, torch.device("cpu"))
        grads = sum(_local_bytes(p.grad) for p in trained.params.values() if p.grad is not None)
        torch.nn.utils.clip_grad_norm_(list(trained.params.values()), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            times.append(time.perf_counter() - start)
    moments = sum(_local_bytes(v) for state in optimizer.state.values() for v in state.values()
                  if torch.is_tensor(v) and v.dim() > 0)
    row = {"strategy": args.strategy, "method": args.method, "rank": ranks.rank,
           "world_size": ranks.world_size, "trained_tensor_bytes": sum(_local_bytes(p) for p in trained.params.values()),
           "grad_bytes": grads, "adamw_moment_bytes": moments, "weight_bytes": weights,
           # ru_maxrss is KiB on Linux
           "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "step_s": statistics.median(times), "tokens_per_step": args.batch_size * args.seq_len}
    for each in ranks.gather([row]):  # one printer: two ranks' lines would interleave
        if ranks.is_main:
            print("ROW " + json.dumps(each), flush=True)
    # Nothing that holds the process group (the DDP reducer, FSDP's state, the DTensors' mesh)
    # outlives it, and the worker ends without interpreter finalisation: rank 0 of
    # fsdp_sharded_weights twice aborted at exit in full suites on busy cores ("terminate called
    # without an active exception", after its rows were due). The likely cause (not reproduced
    # in ~140 isolated tries) is a gloo thread dropping a tensor's Python object while Python
    # 3.11 finalises, which ends that thread mid-C++. PYTHONFAULTHANDLER (``launch``) prints
    # every thread's stack if an abort comes before this point.
    del trained, optimizer, adapted, model, params
    gc.collect()
    close(ranks)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(strategy: str, method: str, args) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or 1), "PYTHONFAULTHANDLER": "1"}
    me = [str(Path(__file__).resolve()), "--worker", "--strategy", strategy, "--method", method,
          "--model", args.model, "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
          "--steps", str(args.steps)]
    cmd = ([sys.executable, *me] if strategy == "single" else
           [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *me])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    rows = [json.loads(line[4:]) for line in done.stdout.splitlines() if line.startswith("ROW ")]
    if done.returncode:
        raise SystemExit(f"{strategy}/{method} failed (exit {done.returncode}, after {len(rows)} "
                         f"of its rows):\n{done.stderr[-3000:]}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", choices=STRATEGIES, help=argparse.SUPPRESS)
    parser.add_argument("--method", default="full_ft", help=argparse.SUPPRESS)
    parser.add_argument("--methods", nargs="+", default=["full_ft", "gain_ffn"])
    parser.add_argument("--model", default="smollm2", choices=["smollm2", "tiny"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    args = _bench.add_common_args(parser, reps=1).parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.model, args.steps, args.seq_len = "tiny", 1, 32
    rows = []
    for method in args.methods:
        by_strategy = {s: launch(s, method, args) for s in STRATEGIES}
        single = by_strategy["single"][0]
        for strategy, ranks in by_strategy.items():
            worst = max(ranks, key=lambda r: r["trained_tensor_bytes"] + r["grad_bytes"] + r["adamw_moment_bytes"])
            held = worst["trained_tensor_bytes"] + worst["grad_bytes"] + worst["adamw_moment_bytes"]
            base = single["trained_tensor_bytes"] + single["grad_bytes"] + single["adamw_moment_bytes"]
            rows.append({**worst, "ranks": len(ranks), "training_state_MiB": held / 2**20,
                         "weights_MiB": max(r["weight_bytes"] for r in ranks) / 2**20,
                         "peak_rss_MiB": max(r["peak_rss_MiB"] for r in ranks),
                         # rank 0 reads the checkpoint whole; the others never hold it
                         "peak_rss_other_ranks_MiB": max((r["peak_rss_MiB"] for r in ranks
                                                          if r["rank"]), default=None),
                         "vs_single": held / base, "step_s_vs_single": worst["step_s"] / single["step_s"]})
    _bench.print_table(
        [{**r, "MiB": f"{r['training_state_MiB']:.1f}", "vs single": f"{r['vs_single']:.3f}",
          "weights MiB": f"{r['weights_MiB']:.1f}", "peak RSS MiB": f"{r['peak_rss_MiB']:.0f}",
          "ranks > 0": "-" if r["peak_rss_other_ranks_MiB"] is None else f"{r['peak_rss_other_ranks_MiB']:.0f}",
          "step s": f"{r['step_s']:.3f}", "step vs single": f"{r['step_s_vs_single']:.2f}"} for r in rows],
        ["method", "strategy", "ranks", "MiB", "vs single", "weights MiB", "peak RSS MiB", "ranks > 0",
         "step s", "step vs single"],
        title=f"per rank (largest): training state (trained tensors + gradients + AdamW moments), "
              f"weights held, peak resident memory; {args.model}, global batch "
              f"{args.batch_size}x{args.seq_len}")
    stem = "sharding_memory_quick" if args.quick else "sharding_memory"
    _bench.write_results(args.out, stem, rows, settings={k: str(v) for k, v in vars(args).items()})


if __name__ == "__main__":
    main()

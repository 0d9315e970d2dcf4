"""What each method costs to train: GAIN vs GAIN-FFN vs LoRA vs full FT on the same model.

    python benchmarks/method_cost.py [--model smollm2|tiny] [--steps 2] [--batch-size 4]
                                     [--seq-len 64] [--reps 3] [--threads 1] [--quick] [--out DIR]

Per method, attached through the registry with its YAML options and trained by the harness's
``train_stage`` (AdamW at the method's conventional learning rate):

* step time and tokens/s: one model per method in this process; after a warm-up stage each,
  ``--reps`` rounds of one short stage per method, interleaved, so load from other work hits all
  methods alike; also each method's step time relative to GAIN's, paired per round;
* peak memory: measured in a fresh subprocess per method (run side by side, after the
  timing) so peaks do not mix. CPU: growth of the
  peak resident set (VmHWM, reset through /proc/self/clear_refs) over the resident set of the
  loaded, attached model (its memory-mapped weights paged in first), during one stage from a
  fresh optimizer (gradients, optimizer state, activations, allocator slack); GPU:
  ``torch.cuda.max_memory_allocated`` growth;
* trainable parameters, and the bytes of AdamW's ``exp_avg`` + ``exp_avg_sq`` after the stage;
* checks: no gradient on any frozen tensor after a backward pass, and no per-step full-size copy
  of a frozen weight (a ``TorchDispatchMode`` counts every non-matmul op that reads a frozen
  weight and writes a new tensor of the weight's size; GAIN scaling ``s * W`` would show here).

Prints one table and writes method_cost.json/.csv under --out (default results/bench/).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import _bench
from gainbench.training.loop import TrainSettings, train_stage

SEED = 1
MATMULS = {"mm", "addmm", "bmm", "matmul", "linear", "baddbmm"}


def attach(name, args):
    model, vocab = _bench.load_model(args.model)
    method = _bench.make_registered_method(name)
    torch.manual_seed(SEED)
    adapted = method.attach(model)
    params = method.trainable_parameters(adapted)
    blocks = _bench.random_blocks(vocab, args.steps * args.batch_size, args.seq_len)
    settings = TrainSettings(lr=_bench.method_config(name)[0], batch_size=args.batch_size)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    adapted.to(device)

    def stage():
        return train_stage(adapted, params, blocks, settings, seed=SEED,
                           exempt_from_weight_decay=method.exempt_from_weight_decay,
                           regularization=lambda: method.regularization(adapted), desc=f"bench {name}")
    return adapted, params, blocks, stage


# --- the memory worker (a fresh process per method) ----------------------------------------------

def _proc_status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    try:  # Linux >= 4.0: "5" resets VmHWM to the current resident set
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class FrozenWeightCopies(TorchDispatchMode):
    """Counts non-matmul ops that read a frozen weight and write a fresh weight-sized tensor."""

    def __init__(self, weights):
        super().__init__()
        self.storages = {w.untyped_storage().data_ptr(): w.numel() for w in weights}
        self.hits = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        inputs = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        read = [self.storages[a.untyped_storage().data_ptr()] for a in inputs
                if a.untyped_storage().data_ptr() in self.storages]
        if read and name not in MATMULS:
            outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
            if any(o.numel() in read and o.untyped_storage().data_ptr() not in self.storages
                   for o in outs):
                self.hits[name] += 1
        return out


def worker(name, args) -> dict:
    created = []

    class RecordingAdamW(torch.optim.AdamW):  # keeps train_stage's optimizer for its state
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            created.append(self)

    torch.optim.AdamW = RecordingAdamW
    model, params, blocks, stage = attach(name, args)
    with torch.no_grad():  # from_pretrained memory-maps the weights: page them in before the baseline
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.sum()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    elif Path("/proc/self/status").exists():
        base, reset = _proc_status_kb("VmRSS") * 1024, _reset_peak_rss()
    else:  # no /proc (macOS): the whole process's peak, loading included
        base, reset = 0, False
    training = stage()
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        how = "torch.cuda.max_memory_allocated"
    elif reset:
        peak, how = _proc_status_kb("VmHWM") * 1024, "VmHWM after clear_refs"
    else:  # peak of the whole process, loading included: an upper bound (ru_maxrss: KiB on Linux)
        unit = 1 if sys.platform == "darwin" else 1024
        peak, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit, "ru_maxrss (upper bound)"
    state = created[-1].state.values()
    optimizer_bytes = sum(s[k].numel() * s[k].element_size()
                          for s in state for k in ("exp_avg", "exp_avg_sq") if k in s)

    # One more forward/backward: which tensors get a gradient, and which ops copy a frozen weight.
    trainable = {id(p) for p in params.values()}
    frozen = [p for p in model.parameters() if id(p) not in trainable]
    batch = blocks[: args.batch_size].to(next(model.parameters()).device)
    with FrozenWeightCopies([p for p in frozen if p.dim() == 2]) as copies:
        model(input_ids=batch, labels=batch).loss.backward()
    return {
        "method": name,
        "trainable_params": sum(p.numel() for p in params.values()),
        "total_params": sum(p.numel() for p in model.parameters()),
        "frozen_requiring_grad": sum(p.requires_grad for p in frozen),
        "frozen_with_grad": sum(p.grad is not None for p in frozen),
        "grad_elements": sum(p.grad.numel() for p in model.parameters() if p.grad is not None),
        "frozen_weight_copies_per_step": sum(copies.hits.values()),
        "frozen_weight_copy_ops": dict(copies.hits),
        "optimizer_state_bytes": optimizer_bytes,
        "peak_memory_growth_bytes": peak - base,
        "memory_measure": how,
        "worker_step_s": training.seconds / training.steps,
    }


def start_worker(name, args) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", name, "--model", args.model, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def worker_result(name, process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if process.returncode or not lines:
        raise RuntimeError(f"memory worker for {name} failed:\n{stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# --- the parent: interleaved timing, then one worker per method -----------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = _bench.add_training_step_args(parser).parse_args()
    _bench.quick_training_step(args)
    _bench.setup(args)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args)))
        return

    stages = {name: attach(name, args)[3] for name in args.methods}
    times = _bench.interleaved(stages, reps=args.reps, warmup=1)
    tokens = args.steps * args.batch_size * args.seq_len
    reference = args.methods[0]
    rows = []
    for name in args.methods:
        t = _bench.spread(times[name])
        rel = _bench.paired_ratios(times[name], times[reference])
        rows.append({"method": name, "model": args.model, "step_s": t["median"] / args.steps,
                     "step_spread": t["spread"], "tokens_per_s": tokens / t["median"],
                     f"step_vs_{reference}": rel["median"], f"step_vs_{reference}_min": rel["min"],
                     f"step_vs_{reference}_max": rel["max"], "seconds": times[name]})
    del stages
    # Each worker is its own process, so its peak is its own: they can run side by side.
    workers = {name: start_worker(name, args) for name in args.methods}
    for row in rows:
        row.update(worker_result(row["method"], workers[row["method"]]))

    mib = 2 ** 20
    _bench.print_table(
        [{**r, "s/step": f"{r['step_s']:.3f}", "tokens/s": f"{r['tokens_per_s']:.1f}",
          f"vs {reference} [min-max]": _bench.fmt_ratio({"median": r[f"step_vs_{reference}"],
                                                         "min": r[f"step_vs_{reference}_min"],
                                                         "max": r[f"step_vs_{reference}_max"]}),
          "peak mem +MiB": f"{r['peak_memory_growth_bytes'] / mib:.1f}",
          "trainable": r["trainable_params"],
          "optim MiB": f"{r['optimizer_state_bytes'] / mib:.3f}",
          "frozen w/ grad": r["frozen_with_grad"],
          "W copies/step": r["frozen_weight_copies_per_step"]} for r in rows],
        ["method", "s/step", "tokens/s", f"vs {reference} [min-max]", "peak mem +MiB", "trainable",
         "optim MiB", "frozen w/ grad", "W copies/step"],
        title=f"method cost ({args.model}, {args.batch_size}x{args.seq_len} tokens/step, {args.steps} "
              f"steps/stage, {args.reps} reps; step time relative to {reference}, paired per round)")
    _bench.write_results(args.out, "method_cost", rows, settings=vars(args) | {"out": str(args.out)})


if __name__ == "__main__":
    main()

"""Helpers shared by the benchmark scripts in this folder (not a benchmark itself).

Every benchmark times its candidates in one process, interleaved after a warm-up, and reports
medians with their spread; ratios are taken per repetition (paired), so load from other work on
the machine hits both sides of a ratio alike.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

# Before transformers is imported: nothing here may wait on the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "results" / "bench"
METHODS = ("gain", "gain_ffn", "lora", "full_ft")


def add_common_args(parser, reps: int = 3):
    parser.add_argument("--quick", action="store_true",
                        help="one repetition, tiny model, small sizes (what the tests run)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the JSON/CSV")
    parser.add_argument("--reps", type=int, default=reps, help="timed repetitions after a warm-up")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's); 1 is steadier on a busy machine")
    return parser


def add_training_step_args(parser):
    """The model and step shape that train_step.py and method_cost.py both time."""
    parser.add_argument("--model", default="smollm2", choices=["smollm2", "tiny"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per timed stage")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64)
    return add_common_args(parser)


def quick_training_step(args) -> None:
    """--quick for the training-step benchmarks: the tiny model, short blocks."""
    if args.quick:
        args.model, args.steps, args.seq_len = "tiny", 2, 32


def setup(args) -> None:
    if args.quick:
        args.reps = 1
    if args.threads:
        torch.set_num_threads(args.threads)


def compose(overrides):
    """The config ``python -m gainbench <overrides>`` would run (Hydra's compose API)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from gainbench.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def method_config(name: str) -> tuple[float, dict]:
    """A method's conventional learning rate and options, from configs/method/<name>.yaml."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "method" / f"{name}.yaml"))
    return float(cfg["lr"]), dict(cfg.get("options") or {})


def make_registered_method(name: str):
    """The method as the protocol builds it: the registry, with the options of its YAML."""
    from gainbench.methods import make_method

    return make_method(name, **method_config(name)[1])


def tiny_architecture() -> dict:
    """configs/model/tiny-llama.yaml's architecture (the smoke preset's model)."""
    from omegaconf import OmegaConf

    spec = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "model" / "tiny-llama.yaml"))
    return spec["architecture"]


def load_model(name: str):
    """``(model, vocab_size)``: the embedded SmolLM2-135M (fp32) or the tiny random Llama."""
    if name == "tiny":
        from gainbench.models.tiny import build_tiny_model, train_byte_bpe

        tokenizer = train_byte_bpe(["benchmark text, with some words in it. " * 200], 512)
        model = build_tiny_model(tiny_architecture(), tokenizer)
    else:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging

        from gainbench.models.embedded import smollm2_folder

        logging.disable_progress_bar()
        model = AutoModelForCausalLM.from_pretrained(smollm2_folder(), dtype=torch.float32).eval()
    return model, model.config.vocab_size


def random_blocks(vocab_size: int, n: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab_size, (n, length), generator=torch.Generator().manual_seed(seed))


def sync(device=None) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1
                ) -> dict[str, list[float]]:
    """Seconds per call of each function: ``warmup`` untimed rounds, then ``reps`` rounds in which
    every function runs once, the order reversed every other round (A B, B A, ...) so a drift in
    machine load does not favour whichever runs first."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            sync()
            start = time.perf_counter()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def spread(values: list[float]) -> dict:
    """Median, min, max and (max - min) / median of a list of measurements."""
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values),
            "spread": (max(values) - min(values)) / med if med else float("nan")}


def paired_ratios(numerator: list[float], denominator: list[float]) -> dict:
    """``numerator[i] / denominator[i]`` per repetition (each pair ran back to back)."""
    return spread([a / b for a, b in zip(numerator, denominator)])


def fmt_ratio(r: dict) -> str:
    return f"{r['median']:.3f} [{r['min']:.3f}-{r['max']:.3f}]"


def print_table(rows: list[dict], columns: list[str], title: str | None = None) -> None:
    from tabulate import tabulate

    if title:
        print(title)
    print(tabulate([[r.get(c, "") for c in columns] for r in rows], headers=columns,
                   floatfmt=".4g", disable_numparse=True))


def machine() -> dict:
    return {"machine": platform.machine(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0], "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_results(out_dir: Path, stem: str, rows: list[dict], **meta) -> list[Path]:
    """``<stem>.json`` (settings, machine, rows) and ``<stem>.csv`` (the rows, flat)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    json_path.write_text(json.dumps({**meta, "machine": machine(), "rows": rows}, indent=2,
                                    default=str) + "\n")
    flat = [{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in rows]
    columns = list(dict.fromkeys(k for r in flat for k in r))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
    print(f"wrote {json_path} and {csv_path.name}")
    return [json_path, csv_path]

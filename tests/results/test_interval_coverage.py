"""The intervals cover what they say: synthetic runs with a planted null and a planted effect.

Each synthetic study has two methods, three learning rates and three seeds, on two domains of
20 validation documents. A token's NLL is the domain's level, plus what the method and learning
rate do to it, plus a per-document effect of each method and stage (the documents a study happens
to score: shared by every seed) and a per-seed effect (training noise). The fronts of A and B are
the same function under the null and differ by a known amount under the effect.
"""

import math

import numpy as np
import pandas as pd
import pytest

from gainbench.results import intervals
from gainbench.results.fronts import matched_comparison
from gainbench.results.intervals import DocumentBootstrap, combine
from gainbench.results.runs import Run, label_variants

DOMAINS = ["d1", "d2"]
LRS = [1e-3, 2e-3, 4e-3]
N_DOCS, TOKENS = 20, 50


def _study(rng, effect: float, doc_sd: float = 0.03, seed_sd: float = 0.01) -> list[Run]:
    """Runs of methods a and b; ``effect`` (nats) is how much more b forgets domain 1."""
    base = np.array([2.0, 2.5])
    runs = []
    for method, extra in (("a", 0.0), ("b", effect)):
        docs = rng.normal(0, doc_sd, size=(len(LRS), 3, 2, N_DOCS))  # lr x stage x domain x doc
        for i, lr in enumerate(LRS):
            adapt = 0.05 * (i + 1)      # in-domain drop per stage, grows with lr
            forget = 0.02 * (i + 1)     # earlier-domain rise, the same function of gain for a and b
            for seed in range(3):
                noise = rng.normal(0, seed_sd, size=(3, 2))
                level = np.array([base,
                                  base - [adapt, 0.0],
                                  base - [adapt - forget - extra, adapt]])  # stage x domain
                per_token = level[:, :, None] + noise[:, :, None] + docs[i]
                runs.append(_run(method, lr, seed, per_token))
    label_variants(runs)
    return runs


def _run(method, lr, seed, per_token) -> Run:
    rows = []
    for stage in range(3):
        for j, domain in enumerate(DOMAINS):
            sums = per_token[stage, j] * TOKENS
            common = dict(run_id=f"{method}-{lr}-{seed}", model="toy", method=method, seed=seed,
                          sequence="s", stage=stage, stage_domain="base" if stage == 0 else DOMAINS[stage - 1],
                          stderr=math.nan)
            rows.append({**common, "eval_kind": "ppl", "eval_name": domain, "metric": "nll",
                         "value": sums.sum() / (TOKENS * N_DOCS), "n": TOKENS * N_DOCS})
            rows += [{**common, "eval_kind": "ppl_doc", "eval_name": domain, "metric": "nll_sum",
                      "value": s, "n": TOKENS, "document": f"doc{d}"} for d, s in enumerate(sums)]
    config = {"model": {"name": "toy"}, "method": {"name": method, "lr": lr}, "seed": seed,
              "sequence": {"name": "s", "order": DOMAINS}, "train": {"lr": lr}}
    return Run(path=None, meta={"config": config, "run_id": f"{method}-{lr}-{seed}",
                                "finished_stages": [0, 1, 2]}, rows=pd.DataFrame(rows))


def test_resampled_loss_matrices_centre_on_the_pooled_ones():
    runs = _study(np.random.default_rng(0), effect=0.0)[:2]
    boot = DocumentBootstrap(runs, n_boot=400)
    assert boot.available and boot.loss_matrices().shape == (400, 2, 3, 2)
    pooled = np.stack([run.loss_matrix.to_numpy() for run in runs])
    np.testing.assert_allclose(boot.loss_matrices().mean(axis=0), pooled, atol=2e-3)
    # the same documents are drawn for both runs: their difference varies less than either
    spread = boot.loss_matrices()[:, :, 2, 0].std(axis=0)
    assert (spread > 0).all()


def test_runs_without_document_rows_say_so():
    runs = _study(np.random.default_rng(0), effect=0.0)
    runs[0].rows = runs[0].rows[runs[0].rows.eval_kind == "ppl"]
    boot = DocumentBootstrap(runs)
    assert not boot.available and boot.reason == "runs without per-document rows"


def test_combine_adds_documents_and_seeds_and_says_what_it_covers():
    with_docs = combine(np.array([1.0, 2.0, 3.0]), doc_replicates=np.random.default_rng(0).normal(2, 1, 500))
    seeds_only = combine(np.array([1.0, 2.0, 3.0]))
    assert with_docs.covers == "validation documents (paired bootstrap) and 3 seeds (Student-t)"
    assert seeds_only.covers == "3 seeds (Student-t)"
    assert with_docs.half_width > seeds_only.half_width
    one_seed = combine(np.array([2.0]))
    assert math.isnan(one_seed.lo) and one_seed.reason == "one seed"


def _matched(runs, at):
    table = matched_comparison(runs, reference_method="a", at=at)
    return table[table["earlier change"] == "vs base"].iloc[0]


@pytest.mark.slow
def test_coverage_of_the_matched_comparison_under_a_planted_null_and_effect(monkeypatch):
    monkeypatch.setattr(intervals, "N_BOOT", 200)
    rng = np.random.default_rng(12345)
    replicates, at = 200, 10.0   # % in-domain gain, mid-front (the fronts span about 5 .. 14%)
    null_covered, effect_found = 0, 0
    for _ in range(replicates):
        row = _matched(_study(rng, effect=0.0), at)
        assert row["covers"] == ("validation documents (paired bootstrap) and 3 seeds (Student-t) "
                                 "and interpolation (allowance)")
        null_covered += row["lo"] <= 0 <= row["hi"]
    for _ in range(20):
        # b forgets domain 1 by +0.15 nats (+16% PPL), about three half-widths of the interval
        row = _matched(_study(rng, effect=0.15), at)
        effect_found += row["lo"] > 0
    assert null_covered >= 0.9 * replicates, f"null covered in {null_covered} of {replicates}"
    assert effect_found >= 18, f"planted effect found in {effect_found} of 20"


def test_the_noise_floor_of_a_change_is_zero_without_one_and_grows_with_document_spread():
    from gainbench.results.intervals import change_standard_error

    before = pd.DataFrame({"document": [f"d{i}" for i in range(30)], "value": 100.0, "n": 50})
    assert change_standard_error(before, before) == 0.0
    rng = np.random.default_rng(0)
    small = before.assign(value=100.0 + rng.normal(0, 1, 30))
    large = before.assign(value=100.0 + rng.normal(0, 5, 30))
    assert 0 < change_standard_error(before, small) < change_standard_error(before, large)
    # about the textbook value: sd of the per-document change in nats/token / sqrt(30), in %
    expected = 100 * (large["value"] - 100).std() / 50 / np.sqrt(30)
    assert change_standard_error(before, large) == pytest.approx(expected, rel=0.2)

"""Fixtures for the results tests: the table and figure scripts, run in this process, and
synthetic studies whose fronts have a planted answer (``synthetic_study``)."""

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gainbench.results.runs import Run, label_variants
from tests.conftest import load_script

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"   # the checkout's, beside tests/


@pytest.fixture
def script(monkeypatch):
    """``script("make_tables", *args)`` runs scripts/make_tables.py's ``main()`` as
    ``python scripts/make_tables.py *args`` would, in this process (no interpreter to start)."""

    def run(name, *args):
        path = SCRIPTS / f"{name}.py"
        monkeypatch.setattr(sys, "argv", [str(path), *map(str, args)])
        return load_script(path).main()

    return run


# --- synthetic studies with a planted front ----------------------------------------------------
#
# Each synthetic study has methods over three learning rates and three seeds, on two domains of
# 20 validation documents. A token's NLL is the domain's level, plus what the method and learning
# rate do to it, plus a per-document effect of each method and stage (the documents a study
# happens to score: shared by every seed) and a per-seed effect (training noise).

SYNTHETIC_DOMAINS = ["d1", "d2"]
SYNTHETIC_LRS = [1e-3, 2e-3, 4e-3]
N_DOCS, TOKENS = 20, 50


def synthetic_study(rng, effect: float = 0.0, doc_sd: float = 0.03, seed_sd: float = 0.01,
                    forget: float = 0.4, methods=("a", "b"), tokens_per_stage=None) -> list[Run]:
    """Runs of ``methods``: learning rate i lowers each stage's own domain by ``adapt`` = 0.05 i
    nats and raises the earlier domain by ``forget`` x ``adapt`` (the same front for every
    method); ``effect`` (nats) is how much more the second method forgets domain 1.
    ``tokens_per_stage``: the budget each run's config records (seq_len 256, batch 4), none if
    None. The noise-free front: ``planted_change``."""
    base = np.array([2.0, 2.5])
    runs = []
    for method, extra in zip(methods, (0.0, effect)):
        docs = rng.normal(0, doc_sd, size=(len(SYNTHETIC_LRS), 3, 2, N_DOCS))  # lr x stage x domain x doc
        for i, lr in enumerate(SYNTHETIC_LRS):
            adapt = 0.05 * (i + 1)      # in-domain drop per stage, grows with lr
            for seed in range(3):
                noise = rng.normal(0, seed_sd, size=(3, 2))
                level = np.array([base,
                                  base - [adapt, 0.0],
                                  base - [adapt - forget * adapt - extra, adapt]])  # stage x domain
                per_token = level[:, :, None] + noise[:, :, None] + docs[i]
                runs.append(_synthetic_run(method, lr, seed, per_token, tokens_per_stage))
    label_variants(runs)
    return runs


def planted_change(gain: float, reference: str, forget: float = 0.4) -> float:
    """The noise-free earlier-domain change (%) of ``synthetic_study``'s first method at in-domain
    gain ``gain`` (%): with adapt = -ln(1 - gain/100), ``exp((forget - 1) adapt) - 1`` vs base,
    ``exp(forget adapt) - 1`` vs just-trained."""
    adapt = -math.log(1 - gain / 100)
    return 100 * math.expm1((forget - (reference == "vs base")) * adapt)


def _synthetic_run(method, lr, seed, per_token, tokens_per_stage) -> Run:
    budget = f"-{tokens_per_stage}" if tokens_per_stage else ""
    run_id = f"{method}-{lr}-{seed}{budget}"
    rows = []
    for stage in range(3):
        for j, domain in enumerate(SYNTHETIC_DOMAINS):
            sums = per_token[stage, j] * TOKENS
            common = dict(run_id=run_id, model="toy", method=method, seed=seed, sequence="s",
                          stage=stage, stage_domain="base" if stage == 0 else SYNTHETIC_DOMAINS[stage - 1],
                          stderr=math.nan)
            rows.append({**common, "eval_kind": "ppl", "eval_name": domain, "metric": "nll",
                         "value": sums.sum() / (TOKENS * N_DOCS), "n": TOKENS * N_DOCS})
            rows += [{**common, "eval_kind": "ppl_doc", "eval_name": domain, "metric": "nll_sum",
                      "value": s, "n": TOKENS, "document": f"doc{d}"} for d, s in enumerate(sums)]
    train = {"lr": lr} if not tokens_per_stage else {
        "lr": lr, "tokens_per_stage": tokens_per_stage, "seq_len": 256, "batch_size": 4}
    config = {"model": {"name": "toy"}, "method": {"name": method, "lr": lr}, "seed": seed,
              "sequence": {"name": "s", "order": SYNTHETIC_DOMAINS}, "train": train}
    return Run(path=None, meta={"config": config, "run_id": run_id, "finished_stages": [0, 1, 2]},
               rows=pd.DataFrame(rows))


def write_runs(runs: list[Run], folder: Path) -> None:
    """``runs`` as run folders under ``folder``, stage by stage, as the harness writes them."""
    from gainbench.results.store import RunStore

    for run in runs:
        store = RunStore(folder / run.run_id)
        meta = {"config": run.config, "run_id": run.run_id, "stage_seconds": {}}
        for stage, rows in run.rows.groupby("stage"):
            store.finish_stage(int(stage), rows.to_dict("records"), meta)
            meta = store.meta()

"""paper8's shape end to end with its hub datasets swapped for local files; the token cache
changes no result; bad data stops a run before anything is trained or written."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from transformers import PreTrainedTokenizerBase

from gainbench.errors import GainbenchError
from gainbench.protocol import run
from tests.conftest import compose_config
from tests.data.tokenizer_calls import ENTRY_POINTS, count_tokenizer_calls

ORIGINALS = {name: getattr(PreTrainedTokenizerBase, name) for name in ENTRY_POINTS}

LOCAL = ["pubmed_abstracts", "wikitext103", "pg19_books"]  # two with min_chars: 200, one without
WORDS = {
    "pubmed_abstracts": "patients trial dose cohort clinical outcome randomized placebo serum",
    "wikitext103": "the city was founded century river kingdom battle museum population",
    "pg19_books": "she said upon the old house evening letter gentleman window carriage",
}


def _write_corpus(folder, name, n_docs=120):
    """``folder`` is relative to the working directory (a test's tmp_path), so the doc_ids, and
    with them the splits, are the same in every test session."""
    rng = random.Random(name)
    words = WORDS[name].split()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "part-0.jsonl", "w") as f:
        for i in range(n_docs):
            text = " ".join(rng.choice(words) for _ in range(60 + i % 40)) + "."
            f.write(json.dumps({"text": text, "id": i}) + "\n")
    return f"{folder}/*.jsonl"


def local_paper8(tmp_path, *extra, domains=LOCAL, corpora=None):
    """``sequence=paper8`` with ``domains`` read from local JSONL (the override a user types)."""
    corpora = corpora or {name: _write_corpus(Path("corpora") / name, name) for name in domains}
    overrides = ["sequence=paper8", "model=tiny-llama", "train.seq_len=64", "train.batch_size=4",
                 "train.tokens_per_stage=512", "eval.val_tokens=256", "eval.lm_eval.stages=none",
                 "eval.diagnostics.stages=none", f"sequence.order=[{','.join(domains)}]"]
    for name, glob in corpora.items():
        overrides += [f"~sequence.domains.{name}.source",
                      f"+sequence.domains.{name}.source={{kind: local_files, paths: '{glob}', "
                      "text_field: text}"]
    return compose_config(overrides + list(extra))


def _rows(run_dir):
    rows = pd.read_parquet(run_dir / "rows.parquet")
    return rows[rows.metric != "train_seconds"].reset_index(drop=True)  # wall time differs


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.mark.slow
def test_paper8_on_local_files_runs_and_the_token_cache_changes_nothing(tmp_path, monkeypatch):
    cold_dir = run(local_paper8(tmp_path, f"results_dir={tmp_path / 'cold'}"))
    rows = _rows(cold_dir)
    meta = json.loads((cold_dir / "run.json").read_text())
    assert meta["finished_stages"] == [0, 1, 2, 3] and list(meta["domains"]) == LOCAL
    assert meta["config"]["sequence"]["name"] == "paper8"
    ppl = rows[(rows.eval_kind == "ppl") & (rows.metric == "nll")]
    assert len(ppl) == 4 * 3 and (ppl.n == 4 * 63).all()  # 256 val tokens = 4 blocks of 64

    calls = count_tokenizer_calls(monkeypatch)
    warm_dir = run(local_paper8(tmp_path, f"results_dir={tmp_path / 'warm'}"))
    assert calls == []  # every domain came from the token cache: nothing was tokenised
    for name in ENTRY_POINTS:  # stop counting; the autouse fixtures' patches stay
        monkeypatch.setattr(PreTrainedTokenizerBase, name, ORIGINALS[name])
    monkeypatch.setenv("GAINBENCH_TOKEN_CACHE", "0")
    off_dir = run(local_paper8(tmp_path, f"results_dir={tmp_path / 'off'}"))

    assert warm_dir.name == off_dir.name == cold_dir.name  # the cache is not part of the run id
    for other in (warm_dir, off_dir):
        pd.testing.assert_frame_equal(_rows(other), rows)
        assert json.loads((other / "run.json").read_text())["domains"] == meta["domains"]


@pytest.mark.slow
def test_per_domain_budgets_reach_the_run(tmp_path):
    run_dir = run(local_paper8(tmp_path, f"results_dir={tmp_path / 'r'}",
                               "+sequence.domains.wikitext103.train_tokens=256",
                               "+sequence.domains.wikitext103.val_tokens=128",
                               domains=LOCAL[:2]))
    rows = pd.read_parquet(run_dir / "rows.parquet")
    nll = rows[(rows.eval_kind == "ppl") & (rows.metric == "nll")]
    assert set(nll[nll.eval_name == "wikitext103"].n) == {2 * 63}   # its own 128 val tokens
    assert set(nll[nll.eval_name == "pubmed_abstracts"].n) == {4 * 63}
    trained = rows[(rows.eval_kind == "train") & (rows.metric == "train_loss_mean")]
    assert list(trained.n) == [512, 256]  # train tokens of stage 1 (pubmed), stage 2 (wikitext)


@pytest.mark.parametrize("problem, message", [
    ("small_validation", r"domain 'pg19_books' has too little validation text: \d+ tokens .* "
                         r"validation budget of 100000; raise sequence\.domains\.pg19_books\."
                         r"validation_percent.*eval\.val_tokens"),
    ("few_validation_documents", r"domain 'pg19_books' has \d+ validation documents, fewer than the "
                                 r"16 .*eval\.val_min_documents=16\); raise sequence\.domains\."
                                 r"pg19_books\.validation_percent"),
    ("bad_jsonl", r"domain 'pg19_books': .*part-0\.jsonl line 3 is not valid JSON"),
    ("no_text_field", r"domain 'pg19_books': .*part-0\.jsonl line 1 has no string field 'text' "
                      r"\(it has: body\)"),
    ("empty", r"domain 'pg19_books' is empty"),
])
def test_bad_data_in_the_last_domain_stops_the_run_before_stage_0(tmp_path, problem, message):
    corpora = {name: _write_corpus(Path("corpora") / name, name) for name in LOCAL}
    bad = Path("corpora/pg19_books/part-0.jsonl")
    extra = []
    if problem == "small_validation":   # whole documents, any number of them: too few tokens
        extra = ["+sequence.domains.pg19_books.val_tokens=100000", "eval.val_doc_tokens=null",
                 "eval.val_min_documents=1"]
    elif problem == "few_validation_documents":   # 100000 tokens at 64 a document: 16 needed
        extra = ["+sequence.domains.pg19_books.val_tokens=100000"]
    elif problem == "bad_jsonl":
        lines = bad.read_text().splitlines()
        bad.write_text("\n".join(lines[:2] + ['{"text": "unterminated'] + lines[2:]) + "\n")
    elif problem == "no_text_field":
        bad.write_text(json.dumps({"body": "x" * 300}) + "\n")
    else:
        bad.write_text("")
    with pytest.raises(GainbenchError, match=message):
        run(local_paper8(tmp_path, f"results_dir={tmp_path / 'results'}", *extra, corpora=corpora))
    assert not (tmp_path / "results").exists()  # no stage 0, no folder


@pytest.mark.slow  # a subprocess; paper8's composition itself: tests/test_configs.py
def test_cli_composes_paper8(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "gainbench", "sequence=paper8", "--cfg", "job"],
                            capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "name: paper8" in result.stdout and "path: emozilla/pg19" in result.stdout
    assert "train_tokens: null" in result.stdout.split("domains:")[1]  # optional keys: null by default

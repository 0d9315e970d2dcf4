"""scripts/prepare_data.py: reads every domain, fills the token cache the runs then hit, and
names what it could not prepare."""

import os
import subprocess
import sys

import pytest
import torch

from gainbench.cli import CONFIG_DIR
from gainbench.data.domains import prepare_domain, read_documents, split_documents
from gainbench.settings import settings_from_config
from tests.conftest import compose_config, load_script
from tests.data.tokenizer_calls import count_tokenizer_calls

SCRIPT = CONFIG_DIR.parent / "scripts" / "prepare_data.py"
TINY = ["model=tiny-llama", "sequence.order=[kjv_bible]", "train.seq_len=64",
        "train.tokens_per_stage=1024", "eval.val_tokens=512"]


@pytest.fixture(scope="module")
def prepare_data():
    return load_script(SCRIPT)


def _table_row(out, domain):
    return next(line.split() for line in out.splitlines() if line.startswith(domain + " "))


def test_fills_the_token_cache_that_a_run_then_hits(prepare_data, capsys, private_token_cache,
                                                    monkeypatch):
    assert prepare_data.main(TINY) == 0
    out = capsys.readouterr().out
    assert "domain" in out and "documents" in out and "tokenise s" in out
    row = _table_row(out, "kjv_bible")
    assert row[1] == "1189" and row[3:5] == ["1024", "512"] and row[-1] == "written"
    assert len(list(private_token_cache.glob("*.safetensors"))) == 1

    assert prepare_data.main(TINY) == 0
    assert _table_row(capsys.readouterr().out, "kjv_bible")[-1] == "hit"

    # what the protocol would prepare with the same config comes from the cache
    settings = settings_from_config(compose_config(TINY))
    documents = {s.name: read_documents(s) for s in settings.domains}
    tokenizer = prepare_data.load_tokenizer(settings, documents)
    calls = count_tokenizer_calls(monkeypatch)
    spec = settings.domains[0]
    data = prepare_domain(spec, tokenizer, settings.seq_len, settings.train_tokens,
                          settings.val_tokens, documents[spec.name], settings.data_rules)
    assert data.from_cache and calls == []


def test_the_tokenizer_matches_the_protocol_s(prepare_data):
    from gainbench.data import token_cache
    from gainbench.models import load_model

    settings = settings_from_config(compose_config(TINY))
    documents = {s.name: read_documents(s) for s in settings.domains}

    def texts():  # as gainbench.protocol._setup_model_and_data
        for s in settings.domains:
            yield from (d.text for d in split_documents(documents[s.name], s.validation_percent)[0][:200])

    _, protocol_tokenizer = load_model(settings.model, torch.device("cpu"), texts)
    script_tokenizer = prepare_data.load_tokenizer(settings, documents)
    assert (token_cache.tokenizer_fingerprint(script_tokenizer)
            == token_cache.tokenizer_fingerprint(protocol_tokenizer))


def test_an_unreachable_hf_dataset_is_named_with_the_fix(prepare_data, capsys):
    # HF_HUB_OFFLINE=1 (conftest): as on a cluster node whose HF cache was not filled
    assert prepare_data.main(["sequence=paper8", "sequence.order=[wikitext103]",
                              "model=tiny-llama"]) == 2
    captured = capsys.readouterr()
    assert _table_row(captured.out, "wikitext103")[-1] == "error"
    error = [line for line in captured.err.splitlines() if line.startswith("gainbench: error:")]
    assert len(error) == 1
    for needed in ("domain 'wikitext103'", "'Salesforce/wikitext'", "scripts/prepare_data.py",
                   "HF_HOME"):
        assert needed in error[0], needed


def test_bad_override_is_one_line_and_exit_2(prepare_data, capsys):
    assert prepare_data.main(["sequence=nine"]) == 2  # the script's exit status
    error = capsys.readouterr().err.strip()
    assert error.startswith("gainbench: error: unknown sequence 'nine'") and "\n" not in error


@pytest.mark.slow
def test_bad_override_is_one_line_and_exit_2_as_a_command():
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    result = subprocess.run([sys.executable, str(SCRIPT), "sequence=nine"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("gainbench: error: unknown sequence 'nine'")
    assert "Traceback" not in result.stderr

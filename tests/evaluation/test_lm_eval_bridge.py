"""lm-eval bridge on a tiny random Llama and a BPE tokenizer trained here, fully offline."""

import json
import math
import os
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch

from gainbench.errors import GainbenchError
from gainbench.evaluation.lm_eval_bridge import TASKS_DIR, _rows, list_local_tasks, run_lm_eval

LOCAL = ["gb_boolq_mini", "gb_sciq_mini"]


def _task_rows(name):
    path = TASKS_DIR / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # A few KB of text: the task data itself, so the vocabulary fits the prompts.
    text = [r["passage"] + " " + r["question"] + "? yes no" for r in _task_rows("gb_boolq_mini")]
    text += [r["question"] + " " + " ".join(r["choices"]) for r in _task_rows("gb_sciq_mini")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(text, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def tiny_model(tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, intermediate_size=128, max_position_embeddings=1024,
        eos_token_id=tiny_tokenizer.eos_token_id, pad_token_id=tiny_tokenizer.pad_token_id,
        bos_token_id=tiny_tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(cfg)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test: our local tasks must stay offline."""

    def refuse(*args, **kwargs):
        raise AssertionError("lm-eval tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_list_local_tasks():
    assert list_local_tasks() == ["gb_boolq_mini", "gb_cloze_embedded", "gb_sciq_mini"]


def test_local_data_shape():
    boolq, sciq = _task_rows("gb_boolq_mini"), _task_rows("gb_sciq_mini")
    assert 60 <= len(boolq) <= 100 and 40 <= len(sciq) <= 60
    assert 0.35 < sum(r["label"] for r in boolq) / len(boolq) < 0.65
    assert all(len(r["choices"]) == 4 and r["answer"] in range(4) for r in sciq)


def test_rows_and_provenance(tiny_model, tiny_tokenizer, no_network):
    tiny_model.train()
    rows, prov = run_lm_eval(tiny_model, tiny_tokenizer, LOCAL, limit=10, batch_size=8)
    assert tiny_model.training  # HFLM switched it to eval; the bridge puts it back
    assert {(r["eval_name"], r["metric"]) for r in rows} == {
        ("gb_boolq_mini", "acc"), ("gb_sciq_mini", "acc"), ("gb_sciq_mini", "acc_norm"),
    }
    for r in rows:
        assert 0.0 <= r["value"] <= 1.0
        assert math.isfinite(r["stderr"])
        assert r["n"] == 10
    assert set(prov["task_versions"]) == set(LOCAL)
    assert prov["n_shot"] == {"gb_boolq_mini": 0, "gb_sciq_mini": 0}
    assert prov["lm_eval_version"] and len(prov["configs_hash"]) == 16


def test_env_info_is_cached_only_inside_our_call(tiny_model, tiny_tokenizer, monkeypatch):
    """lm-eval's add_env_info (a ~1 s ``pip list``) runs once per process inside our calls, and
    the library's own function is back in place once each call returns."""
    import lm_eval.evaluator as evaluator
    from lm_eval.loggers.utils import add_env_info

    from gainbench.evaluation import lm_eval_bridge

    run_lm_eval(tiny_model, tiny_tokenizer, ["gb_boolq_mini"], limit=2)
    assert evaluator.add_env_info is add_env_info  # other lm-eval users see the library as is

    calls = []

    def counting_env_info(results):
        calls.append(1)
        results["pretty_env_info"] = "env"

    monkeypatch.setattr(evaluator, "add_env_info", counting_env_info)
    monkeypatch.setattr(lm_eval_bridge, "_ENV_INFO", {})  # as in a fresh process
    for _ in range(2):
        run_lm_eval(tiny_model, tiny_tokenizer, ["gb_boolq_mini"], limit=2)
        assert evaluator.add_env_info is counting_env_info
    assert len(calls) == 1


def test_eval_mode_and_rng_are_restored(tiny_model, tiny_tokenizer):
    tiny_model.eval()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_lm_eval(tiny_model, tiny_tokenizer, ["gb_boolq_mini"], limit=2, seed=7)
    assert not tiny_model.training
    assert torch.equal(torch.rand(3), expected)  # lm-eval's reseeding did not leak out


def test_fewshot_and_full_set(tiny_model, tiny_tokenizer):
    rows, prov = run_lm_eval(tiny_model, tiny_tokenizer, ["gb_sciq_mini"], num_fewshot=2, limit=4)
    assert prov["n_shot"] == {"gb_sciq_mini": 2}
    assert {r["n"] for r in rows} == {4}


def test_always_yes_model_scores_the_yes_fraction(tiny_model, tiny_tokenizer, no_network, tmp_path, monkeypatch):
    """With " yes" forced to be most likely, acc must equal the share of yes labels."""
    monkeypatch.chdir(tmp_path)  # the task data must not depend on the working directory
    yes_ids = tiny_tokenizer(" yes", add_special_tokens=False).input_ids
    no_ids = tiny_tokenizer(" no", add_special_tokens=False).input_ids
    assert not set(yes_ids) & set(no_ids)
    bias = torch.zeros(len(tiny_tokenizer))
    bias[yes_ids] = 50.0  # every " yes" token near probability 1, every " no" token near 0
    handle = tiny_model.lm_head.register_forward_hook(lambda mod, inp, out: out + bias)
    try:
        rows, _ = run_lm_eval(tiny_model, tiny_tokenizer, ["gb_boolq_mini"], batch_size=16)
    finally:
        handle.remove()
    labels = [r["label"] for r in _task_rows("gb_boolq_mini")]
    (row,) = rows
    assert row["n"] == len(labels)
    p, n = sum(labels) / len(labels), len(labels)
    assert row["value"] == pytest.approx(p)
    # the stderr is over the task's items: sample std of the 0/1 scores / sqrt(n)
    assert row["stderr"] == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)))


def test_unknown_task_names_local_tasks(monkeypatch):
    """lm-eval's built-in index (14,000+ YAML files, seconds) is stood in for by gainbench's
    own; the real one: test_an_unknown_task_is_looked_for_among_lm_eval_s_built_in_tasks."""
    from gainbench.evaluation import lm_eval_bridge

    real, indexed = lm_eval_bridge._task_manager, []

    def local_tasks_only(local_only, include_path=None):
        indexed.append("local" if local_only else "built-in")
        return real(True, include_path)

    monkeypatch.setattr(lm_eval_bridge, "_task_manager", local_tasks_only)
    with pytest.raises(GainbenchError, match="gb_boolq_mini.*built-in"):
        run_lm_eval(None, None, ["gb_no_such_task"])
    assert indexed == ["local", "built-in"]  # not ours, so looked for among lm-eval's too


@pytest.mark.slow
def test_an_unknown_task_is_looked_for_among_lm_eval_s_built_in_tasks():
    with pytest.raises(GainbenchError, match="gb_boolq_mini.*built-in"):
        run_lm_eval(None, None, ["gb_no_such_task"])


def test_empty_task_list():
    with pytest.raises(GainbenchError):
        run_lm_eval(None, None, [])


def test_rows_from_lm_eval_results():
    """Parsing of lm-eval's results dict: bookkeeping keys skipped, "N/A" stderr, group counts."""
    results = {
        "results": {
            "grp": {"alias": "grp", "acc,none": 0.5, "acc_stderr,none": "N/A"},
            "t1": {"alias": " - t1", "name": "t1", "sample_len": 3, "acc,none": 0.25,
                   "acc_stderr,none": 0.1, "exact_match,strict-match": 1.0},
        },
        "n-samples": {"t1": {"original": 5, "effective": 3}, "t2": {"original": 9, "effective": 4}},
        "group_subtasks": {"grp": ["t1", "t2"]},
    }
    rows = {(r["eval_name"], r["metric"]): r for r in _rows(results)}
    assert set(rows) == {("grp", "acc"), ("t1", "acc"), ("t1", "exact_match,strict-match")}
    assert math.isnan(rows["grp", "acc"]["stderr"]) and rows["grp", "acc"]["n"] == 7
    assert rows["t1", "acc"] == {"eval_name": "t1", "metric": "acc", "value": 0.25, "stderr": 0.1, "n": 3}


def test_users_own_tasks_through_an_include_path(tiny_model, tiny_tokenizer, tmp_path):
    """A task folder of the user's, indexed beside ours, runs offline like ours."""
    import shutil

    from gainbench.evaluation.lm_eval_bridge import TASKS_DIR

    shutil.copy(TASKS_DIR / "gb_boolq_mini.jsonl", tmp_path / "my_yes_no.jsonl")
    shutil.copy(TASKS_DIR / "local_data.py", tmp_path / "local_data.py")
    yaml_text = (TASKS_DIR / "gb_boolq_mini.yaml").read_text()
    (tmp_path / "my_yes_no.yaml").write_text(
        yaml_text.replace("task: gb_boolq_mini", "task: my_yes_no")
                 .replace("data_file: gb_boolq_mini.jsonl", "data_file: my_yes_no.jsonl"))
    rows, _ = run_lm_eval(tiny_model, tiny_tokenizer, ["my_yes_no"], limit=4,
                          include_path=str(tmp_path))
    assert {r["eval_name"] for r in rows} == {"my_yes_no"} and rows[0]["n"] == 4

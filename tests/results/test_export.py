"""Keeping the adapted model (save_model) and PEFT adapters (save_adapters), read back with
vanilla transformers and PEFT (gainbench/results/export.py)."""

import copy
import os

import pandas as pd
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from gainbench.data.domains import prepare_domain, read_documents
from gainbench.evaluation.perplexity import validation_nll
from gainbench.files import umask
from gainbench.methods import apply_gain, make_method
from gainbench.methods.gain import gain_modules
from gainbench.protocol import run
from gainbench.results.export import ModelExport, save_adapter, write_folder
from gainbench.settings import settings_from_config
from tests.conftest import compose_config

PEFT_METHODS = ["lora", "dora", "lora_l2", "replay_lora", "ia3"]


def _logits(model, batch):
    with torch.no_grad():
        return model.eval()(input_ids=batch).logits


# --- the folder is written whole or not at all -------------------------------------------------

def test_a_folder_is_renamed_into_place_whole(tmp_path):
    folder = tmp_path / "model" / "final"

    def half_then_killed(tmp):
        (tmp / "model.safetensors").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder(folder, half_then_killed)
    assert not folder.exists() and list(folder.parent.iterdir()) == []

    (folder.parent / ".final.abc123").mkdir()  # what a SIGKILL mid-write would leave
    assert write_folder(folder, lambda tmp: (tmp / "a").write_text("1"))
    assert [p.name for p in folder.parent.iterdir()] == ["final"]
    assert oct(folder.stat().st_mode & 0o777) == oct(0o777 & ~umask())

    assert write_folder(folder, lambda tmp: (tmp / "b").write_text("2"))  # a stage run again
    assert sorted(p.name for p in folder.iterdir()) == ["b"]
    assert [p.name for p in folder.parent.iterdir()] == ["final"]

    assert not write_folder(tmp_path / "none", lambda tmp: False)  # nothing to write
    assert not (tmp_path / "none").exists() and not list(tmp_path.glob(".none*"))


@pytest.mark.parametrize("when, folders", [("none", {}), ("final", {3: "final"}),
                                           ("every_stage", {1: "stage_1", 2: "stage_2", 3: "stage_3"})])
def test_which_stages_are_written(when, folders, tmp_path):
    export = ModelExport(when, tmp_path, tokenizer=None, last_stage=3)
    assert {s: export.folder_name(s) for s in range(4) if export.folder_name(s)} == folders


# --- the model folder ------------------------------------------------------------------------

def test_unabsorbed_gain_scales_are_folded_into_the_saved_weights(tiny_model, tiny_tokenizer,
                                                                  token_batch, tmp_path):
    """GAIN with absorb_each_stage=false keeps its wrappers between stages; the saved folder is
    the plain architecture computing the same function, and the live model is left as it was."""
    apply_gain(tiny_model, ["attn_out", "ffn_down"])
    torch.manual_seed(1)
    with torch.no_grad():
        for module in gain_modules(tiny_model).values():
            module.param.copy_(torch.rand_like(module.param) + 0.5)
            if module.base.bias is not None:
                module.base.bias.normal_()  # GPT-2's Conv1D: the scale reaches the bias too
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    want = _logits(tiny_model, token_batch)

    (row,) = ModelExport("final", tmp_path, tiny_tokenizer, last_stage=2)(tiny_model, 2)

    folder = tmp_path / "model" / "final"
    assert row["eval_kind"] == "export" and row["eval_name"] == "model/final"
    assert row["value"] == sum(f.stat().st_size for f in folder.iterdir())
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    assert not gain_modules(reloaded) and row["n"] == reloaded.num_parameters()
    torch.testing.assert_close(_logits(reloaded, token_batch), want, rtol=1e-5, atol=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer("In the beginning")["input_ids"] == tiny_tokenizer("In the beginning")["input_ids"]
    after = tiny_model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


def test_tied_embeddings_are_stored_once_and_stay_tied(tiny_tokenizer, token_batch, tmp_path):
    from gainbench.models.tiny import build_tiny_model
    from tests.conftest import TINY_ARCHITECTURES

    model = build_tiny_model({**TINY_ARCHITECTURES["llama"], "tie_word_embeddings": True}, tiny_tokenizer)
    apply_gain(model, ["attn_out"])  # the wrapped path builds its own state dict
    (row,) = ModelExport("every_stage", tmp_path, tiny_tokenizer, last_stage=1)(model, 1)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model" / "stage_1")
    assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
    assert row["n"] == reloaded.num_parameters()  # the shared matrix once
    torch.testing.assert_close(_logits(reloaded, token_batch), _logits(model, token_batch))


# --- adapters ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method_name", PEFT_METHODS)
def test_a_saved_adapter_reloads_onto_the_stage_s_base_with_the_trained_logits(
        method_name, tiny_model, token_batch, tmp_path):
    base = copy.deepcopy(tiny_model)  # the weights the stage started from
    method = make_method(method_name)
    torch.manual_seed(0)
    adapted = method.attach(tiny_model)
    params = method.trainable_parameters(adapted)
    optimizer = torch.optim.AdamW(params.values(), lr=1e-2)
    adapted.train()
    for _ in range(3):  # a few real steps: B (or the scales) move away from their init
        adapted(input_ids=token_batch, labels=token_batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    want = _logits(adapted, token_batch)
    state = {k: v.detach().cpu().clone() for k, v in method.stage_state(adapted).items()}

    assert save_adapter(method, adapted, state, tmp_path / "adapters" / "stage_1")

    folder = tmp_path / "adapters" / "stage_1"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in folder.iterdir()}
    reloaded = PeftModel.from_pretrained(base, folder)
    torch.testing.assert_close(_logits(reloaded, token_batch), want, rtol=0, atol=1e-6)
    merged = method.absorb(adapted)  # the protocol merges after saving: still possible
    torch.testing.assert_close(_logits(merged, token_batch), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method_name", ["gain", "full_ft", "ewc"])
def test_a_method_without_an_adapter_writes_none(method_name, tiny_model, tmp_path):
    method = make_method(method_name)
    adapted = method.attach(tiny_model)
    state = method.stage_state(adapted)
    assert not save_adapter(method, adapted, state, tmp_path / "adapters" / "stage_1")
    assert not (tmp_path / "adapters" / "stage_1").exists()
    assert not list((tmp_path / "adapters").glob(".*"))


# --- end to end -------------------------------------------------------------------------------

SMOKE = ["experiment=smoke", "sequence.order=[kjv_bible,python_code]",
         "eval.lm_eval.stages=none", "eval.diagnostics.stages=none"]


def _validation_ppl(folder, settings, domain_index: int) -> float:
    """Perplexity of the saved model on one domain's validation blocks, packed by the saved
    tokenizer: everything from the folder, with vanilla transformers."""
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    spec = settings.domains[domain_index]
    domain = prepare_domain(spec, tokenizer, settings.seq_len, settings.train_tokens,
                            settings.val_tokens, read_documents(spec), settings.data_rules)
    return validation_nll(model, domain.val_blocks, domain.val_bytes, settings.eval_batch_size).ppl


@pytest.mark.slow
def test_the_final_model_reloads_with_vanilla_transformers_at_the_logged_perplexity(tmp_path):
    overrides = [*SMOKE, "save_model=final", f"results_dir={tmp_path}"]
    settings = settings_from_config(compose_config(overrides))
    assert settings.run_id == settings_from_config(compose_config(SMOKE)).run_id  # not in the id

    run_dir = run(compose_config(overrides))

    folder = run_dir / "model" / "final"
    assert sorted(p.name for p in (run_dir / "model").iterdir()) == ["final"]
    rows = pd.read_parquet(run_dir / "rows.parquet")
    export = rows[rows.eval_kind == "export"]
    assert list(export.stage) == [2] and list(export.eval_name) == ["model/final"]
    for index, name in enumerate(["kjv_bible", "python_code"]):
        logged = rows[(rows.stage == 2) & (rows.eval_kind == "ppl") & (rows.eval_name == name)
                      & (rows.metric == "ppl")].value.item()
        assert _validation_ppl(folder, settings, index) == pytest.approx(logged, rel=1e-5)




@pytest.mark.slow
def test_every_stage_and_its_adapter_reload_to_the_same_model(tmp_path):
    """LoRA, two stages: model/stage_1 plus adapters/stage_2 (PEFT, unmerged) computes what
    model/stage_2 (merged) does."""
    overrides = [*SMOKE, "method=lora", "method.options.dropout=0.0", "save_model=every_stage",
                 "save_adapters=true", f"results_dir={tmp_path}"]
    run_dir = run(compose_config(overrides))

    assert sorted(os.listdir(run_dir / "model")) == ["stage_1", "stage_2"]
    assert sorted(os.listdir(run_dir / "adapters")) == ["stage_1", "stage_2"]
    tokens = AutoTokenizer.from_pretrained(run_dir / "model" / "stage_2")(
        "In the beginning God created the heaven and the earth.", return_tensors="pt")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(run_dir / "model" / "stage_1")
    adapted = PeftModel.from_pretrained(base, run_dir / "adapters" / "stage_2")
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "model" / "stage_2")
    torch.testing.assert_close(_logits(adapted, tokens), _logits(merged, tokens), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_sharded_weights_are_gathered_onto_rank_0_and_saved_whole(tmp_path):
    """Two ranks holding a shard each (FSDP2), GAIN kept unabsorbed across stages: rank 0 alone
    writes each stage's folder, the scales folded into the gathered weights."""
    from tests.test_distributed import _torchrun

    overrides = [*SMOKE, "method.options.absorb_each_stage=false", "save_model=every_stage",
                 "train.strategy=fsdp", "train.shard_weights=true"]
    _torchrun(overrides, tmp_path / "runs", tmp_path / "cache")

    (run_dir,) = (tmp_path / "runs").iterdir()
    assert sorted(os.listdir(run_dir / "model")) == ["stage_1", "stage_2"]
    rows = pd.read_parquet(run_dir / "rows.parquet")
    settings = settings_from_config(compose_config(overrides))
    logged = rows[(rows.stage == 2) & (rows.eval_kind == "ppl") & (rows.eval_name == "kjv_bible")
                  & (rows.metric == "ppl")].value.item()
    assert _validation_ppl(run_dir / "model" / "stage_2", settings, 0) == pytest.approx(logged, rel=1e-5)

"""Weights are loaded only from safetensors: a checkpoint with nothing but pickle ``.bin`` weights
(unpickling can run code) is refused with the fix, and is never opened."""

import huggingface_hub
import pytest
import torch
from transformers import AutoModelForCausalLM

from gainbench.errors import GainbenchError
from gainbench.models.loading import ModelSpec, load_model

CPU = torch.device("cpu")


def _save(model, tokenizer, folder, pickle_only: bool):
    model.save_pretrained(folder)  # safetensors (transformers 5 has no other writer)
    tokenizer.save_pretrained(folder)
    if pickle_only:  # what an old checkpoint holds: pytorch_model.bin and no safetensors
        (folder / "model.safetensors").unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def _load(name_or_path: str):
    return load_model(ModelSpec(name="saved", source="hub", name_or_path=name_or_path), CPU,
                      tokenizer_texts=lambda: [])


@pytest.fixture
def torch_load_calls(monkeypatch):
    """Every torch.load (unpickling) while loading; loading safetensors makes none."""
    calls, real = [], torch.load

    def spy(*args, **kwargs):
        calls.append(args[0] if args else kwargs.get("f"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def test_a_folder_with_only_pickle_weights_is_refused_with_the_fix(tiny_model, tiny_tokenizer, tmp_path,
                                                                   torch_load_calls):
    folder = _save(tiny_model, tiny_tokenizer, tmp_path / "pickled", pickle_only=True)
    with pytest.raises(GainbenchError) as err:
        _load(str(folder))
    message = str(err.value)
    assert f"'{folder}' has no safetensors weights" in message
    assert "save_pretrained(OUT)" in message and "model.name_or_path=OUT" in message
    assert torch_load_calls == []  # the .bin was never unpickled

    # It is a valid checkpoint, refused only for its format: transformers alone loads it.
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    assert torch_load_calls  # through torch.load
    torch.testing.assert_close(loaded.state_dict(), tiny_model.state_dict())


def test_a_safetensors_folder_loads(tiny_model, tiny_tokenizer, tmp_path, torch_load_calls):
    folder = _save(tiny_model, tiny_tokenizer, tmp_path / "safe", pickle_only=False)
    model, tokenizer = _load(str(folder))
    torch.testing.assert_close(model.state_dict(), tiny_model.state_dict())
    assert tokenizer.eos_token == tiny_tokenizer.eos_token
    assert torch_load_calls == []


def test_a_hub_repo_with_only_pickle_weights_is_refused(tiny_model, tiny_tokenizer, tmp_path,
                                                        monkeypatch, torch_load_calls):
    """The same for a hub id, here a repo in an offline HF cache."""
    repo, commit = "gainbench-test/pickled", "0" * 40
    snapshot = tmp_path / "hub" / "models--gainbench-test--pickled" / "snapshots" / commit
    _save(tiny_model, tiny_tokenizer, snapshot, pickle_only=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    with pytest.raises(GainbenchError, match=f"'{repo}' has no safetensors weights"):
        _load(repo)
    assert torch_load_calls == []
    AutoModelForCausalLM.from_pretrained(repo)  # found in the cache, and loadable but for its format


def test_a_folder_without_any_weights_says_what_it_must_hold(tiny_model, tiny_tokenizer, tmp_path):
    tiny_model.config.save_pretrained(tmp_path)  # a config and a tokenizer, no weights of any kind
    tiny_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(GainbenchError, match=r"cannot load model 'saved' from local folder .*"
                                             r"must hold a transformers checkpoint"):
        _load(str(tmp_path))


def test_an_empty_folder_is_a_clear_error_not_a_traceback(tmp_path):
    with pytest.raises(GainbenchError, match=r"from local folder .*must hold a transformers checkpoint"):
        _load(str(tmp_path))


@pytest.mark.parametrize("path", ["/nonexistent", "./not/here", "a/b/c"])
def test_a_missing_local_folder_is_named_as_one_not_as_a_hub_id(path):
    with pytest.raises(GainbenchError, match=f"local folder '{path}' does not exist") as err:
        load_model(ModelSpec(name="hf", source="hub", name_or_path=path), torch.device("cpu"), list)
    assert "hf download" not in str(err.value)

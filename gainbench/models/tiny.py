"""Random-init tiny models and a byte-level BPE trained on the fly: for tests and smoke runs.

They are real HF architectures (Llama, GPT-2), only small, so every code path (GAIN on
``nn.Linear`` and on GPT-2's ``Conv1D``, PEFT, lm-eval) runs in seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]


def train_byte_bpe(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE fitted to ``texts``; deterministic for the same texts."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=SPECIAL_TOKENS[0], pad_token=SPECIAL_TOKENS[1],
    )


def build_tiny_model(architecture: dict, tokenizer, init_seed: int = 0):
    """A randomly initialised causal LM from config keys (``model_type`` plus its sizes).

    ``init_seed`` is fixed per model config, not per run, so every method and seed starts
    from the same "pretrained" weights, as they would from a real checkpoint.
    """
    kwargs = dict(architecture)
    model_type = kwargs.pop("model_type")
    special = {k: tokenizer.eos_token_id for k in ("bos_token_id", "eos_token_id")}
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer),
                                  pad_token_id=tokenizer.pad_token_id, **special, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = AutoModelForCausalLM.from_config(config)
    return model.eval()  # as from_pretrained leaves it; training switches to train() itself

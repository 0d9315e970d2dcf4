"""The rules that span groups of the config (a group's own ranges sit on its fields in
gainbench/config/schema.py): a stage trains at least one optimiser step, a domain is scored on
at least one block, the stages an evaluation names exist."""

from __future__ import annotations

from gainbench.errors import GainbenchError


def check_across_groups(config) -> None:
    """Refuse a :class:`~gainbench.config.schema.GainbenchConfig` whose groups disagree."""
    last = len(config.sequence.ordered)
    _check_budgets(config)
    stride, seq_len = config.eval.stride, config.train.seq_len
    if stride is not None and stride > seq_len:
        raise GainbenchError(f"eval.stride={stride} is longer than the window "
                             f"(train.seq_len={seq_len}) and would skip tokens; set "
                             f"eval.stride <= {seq_len}, or null for whole blocks")
    lm_eval_stages = config.eval.lm_eval.stages
    _check_stages("eval.lm_eval.stages", () if isinstance(lm_eval_stages, str) else lm_eval_stages,
                  0, last)
    analysis = config.analysis
    _check_stages("analysis.per_token.stages", analysis.per_token.stages, 0, last)
    _check_stages("analysis.interpolation.stages", analysis.interpolation.stages, 1, last)
    _check_stages("analysis.combination.stages", analysis.combination.stages, 1, last)
    names = [d.name for d in config.sequence.ordered]
    unknown = [d for d in analysis.per_token.domains if d not in names]
    if unknown and analysis.any:
        raise GainbenchError(f"analysis.per_token.domains names {unknown}, not in the sequence "
                             f"{names}; choose among them")


def _check_budgets(config) -> None:
    train, seq_len = config.train, config.train.seq_len
    step = train.batch_size * seq_len
    for key, tokens in [("train.tokens_per_stage", train.tokens_per_stage)] + [
            (f"sequence.domains.{d.name}.train_tokens", d.train_tokens)
            for d in config.sequence.ordered if d.train_tokens is not None]:
        if tokens < step:
            raise GainbenchError(
                f"{key}={tokens} is a stage budget under one optimiser step (train.batch_size x "
                f"train.seq_len = {train.batch_size} x {seq_len} = {step} tokens), so the stage "
                f"would not train; set {key} >= {step}, or lower train.batch_size or train.seq_len")
    for key, tokens in [("eval.val_tokens", config.eval.val_tokens)] + [
            (f"sequence.domains.{d.name}.val_tokens", d.val_tokens)
            for d in config.sequence.ordered if d.val_tokens is not None]:
        if tokens < seq_len:
            raise GainbenchError(
                f"{key}={tokens} is a validation budget under one block of train.seq_len={seq_len} "
                f"tokens, so nothing would be scored; set {key} >= {seq_len}")


def _check_stages(key: str, stages, first: int, last: int) -> None:
    outside = [s for s in stages if not first <= s <= last]
    if outside:
        raise GainbenchError(f"{key} lists stage(s) {outside}, but this sequence has stages "
                             f"{first}..{last}; fix {key}")

"""The composed Hydra config, read strictly into the typed schema (gainbench/config/schema.py)
and turned into the plain values the pieces below the protocol take.

Hydra's DictConfig stops here: models, methods, data, training and evaluation never see it.
Every check of the input happens in :func:`settings_from_config`, before the protocol loads a
model or makes a run folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig, OmegaConf

from gainbench.config.schema import (AnalysisSettings, DiagnosticSettings, GainbenchConfig,
                                     LmEvalSettings, TrainSettings, dump, read_config, run_id)
from gainbench.data.domains import DataRules, DomainSpec
from gainbench.errors import GainbenchError
from gainbench.models import ModelSpec

__all__ = ["AnalysisSettings", "DiagnosticSettings", "LmEvalSettings", "RunSettings",
           "run_id_for", "settings_from_config", "to_container"]


@dataclass(frozen=True)
class RunSettings:
    """One run's settings in the shape the protocol uses (``config`` is the typed whole)."""

    run_id: str
    seed: int
    model: ModelSpec
    method_name: str
    method_options: dict
    sequence_name: str
    domains: tuple[DomainSpec, ...]   # in training order
    seq_len: int
    train_tokens: int
    val_tokens: int
    train: TrainSettings
    eval_batch_size: int
    eval_stride: int | None   # None: non-overlapping blocks; else a sliding window of seq_len
    eval_cells: str           # which perplexity cells each stage scores (config.evaluation.scored_domains)
    reuse_base: bool          # take stage 0's rows from <results_dir>/.base/ when computed before
    lm_eval: LmEvalSettings
    diagnostics: DiagnosticSettings
    analysis: AnalysisSettings
    data_rules: DataRules     # how each domain's text becomes blocks (prepare_domain's rules)
    resolved_config: dict     # every setting, defaults filled in (run.json's "config")
    # where results go and how they are shown (not part of the run id)
    results_dir: str = "runs"
    device: str = "auto"
    logger: dict | None = None
    config: GainbenchConfig | None = None


def to_container(cfg) -> dict:
    """A composed config (DictConfig, or a dict that may hold DictConfig nodes) as plain,
    resolved values; a required value left at ``???`` is a one-line error."""
    if isinstance(cfg, DictConfig):
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise GainbenchError(f"config value(s) {', '.join(missing)} must be set, e.g. "
                                 f"`python -m gainbench ... {missing[0]}=<value>`")
        config = OmegaConf.to_container(cfg, resolve=True)
    else:
        config = {k: (OmegaConf.to_container(v, resolve=True)
                      if isinstance(v, (DictConfig, ListConfig)) else v) for k, v in dict(cfg).items()}
    config.pop("hydra", None)   # present when composed with return_hydra_config=True
    return config


def run_id_for(config: dict) -> str:
    """The run id of a config a run recorded (run.json's ``config``): a key it lacks was added
    after the run, which ran as that key's neutral value says."""
    return run_id(read_config(config, stored=True))


def settings_from_config(cfg) -> RunSettings:
    """Check the whole config against the schema and return the run's settings."""
    config = read_config(to_container(cfg))
    train, evaluation = config.train, config.eval
    return RunSettings(
        run_id=run_id(config),
        seed=config.seed,
        model=config.model,
        method_name=config.method.name,
        method_options=dict(config.method.options),
        sequence_name=config.sequence.name,
        domains=config.sequence.ordered,
        seq_len=train.seq_len,
        train_tokens=train.tokens_per_stage,
        val_tokens=evaluation.val_tokens,
        train=train,
        eval_batch_size=evaluation.batch_size,
        eval_stride=evaluation.stride,
        eval_cells=evaluation.cells,
        reuse_base=evaluation.reuse_base,
        lm_eval=evaluation.lm_eval,
        diagnostics=evaluation.diagnostics,
        analysis=config.analysis,
        data_rules=DataRules(val_doc_tokens=evaluation.val_doc_tokens,
                             val_min_documents=evaluation.val_min_documents,
                             pool_factor=train.pool_factor,
                             dedup_words=evaluation.val_dedup.shingle_words,
                             dedup_max_containment=evaluation.val_dedup.max_containment),
        resolved_config=dump(config),
        results_dir=config.results_dir,
        device=config.device,
        logger=dump(config.logger),
        config=config,
    )

"""The resolved Hydra config, turned into plain values the pieces below the protocol take.

Hydra's DictConfig stops here: models, methods, data, training and evaluation never see it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from gainbench.data.domains import DomainSpec
from gainbench.errors import GainbenchError
from gainbench.models import ModelSpec
from gainbench.training.loop import TrainSettings

# Keys that say where results go or how they are shown, not what is measured: they do not
# change the run id, so a rerun with another logger or results folder resumes the same run.
NON_IDENTITY_KEYS = ("results_dir", "logger", "device", "progress")
# train.* keys that say how a step is computed, not what it computes (the same rows, up to
# floating-point summation order, or bitwise for checkpoints): a job requeued with more GPUs or
# another strategy resumes its own run folder. run.json still records them.
EXECUTION_TRAIN_KEYS = ("strategy", "shard_weights", "grad_accum_steps", "activation_checkpointing",
                        "checkpoint_every")
# train.* values that change nothing when at this value, left out of the run id so that adding
# the key did not move the ids of runs made before it existed.
NEUTRAL_TRAIN_VALUES = {"precision": "fp32", "nonfinite": "stop"}
# `analysis=none` adds no rows and changes no number, so it is left out of the run id too; an
# enabled analysis is part of it (a run with figures is a different run folder).
NO_ANALYSIS = {"name": "none"}


@dataclass(frozen=True)
class AnalysisSettings:
    per_token_domains: tuple[str, ...] = ()
    per_token_stages: tuple[int, ...] = ()
    interpolation_stages: tuple[int, ...] = ()
    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    combination_stages: tuple[int, ...] = ()   # (A, B), B == A + 1
    combination_grid: tuple[float, ...] = (0.0, 0.5, 1.0)

    def __post_init__(self):
        if self.combination_stages:
            a, b = (tuple(self.combination_stages) + (None, None))[:2]
            if len(self.combination_stages) != 2 or a is None or b != a + 1 or a < 1:
                raise GainbenchError(f"analysis.combination.stages must be two consecutive stages "
                                     f">= 1, e.g. [1, 2]; got {list(self.combination_stages)}")

    @property
    def any(self) -> bool:
        """Whether any analysis runs at some stage."""
        return bool(self.per_token_stages or self.interpolation_stages or self.combination_stages)

    @classmethod
    def from_config(cls, config: dict | None) -> "AnalysisSettings":
        config = config or {}
        per_token = config.get("per_token") or {}
        interpolation = config.get("interpolation") or {}
        combination = config.get("combination") or {}
        return cls(
            per_token_domains=tuple(per_token.get("domains") or ()),
            per_token_stages=tuple(per_token.get("stages") or ()),
            interpolation_stages=tuple(interpolation.get("stages") or ()),
            alphas=tuple(interpolation.get("alphas") or cls.alphas),
            combination_stages=tuple(combination.get("stages") or ()),
            combination_grid=tuple(combination.get("grid") or cls.combination_grid),
        )


@dataclass(frozen=True)
class LmEvalSettings:
    tasks: tuple[str, ...]
    num_fewshot: int = 0
    limit: int | None = None
    batch_size: int = 8
    stages: str | tuple[int, ...] = "all"   # all | first_last | none | explicit stage numbers
    include_path: str | None = None        # a folder of the user's own task YAMLs

    def runs_at(self, stage: int, last_stage: int) -> bool:
        if not self.tasks or self.stages == "none":
            return False
        if self.stages == "all":
            return True
        if self.stages == "first_last":
            return stage in (0, last_stage)
        return stage in self.stages


@dataclass(frozen=True)
class DiagnosticSettings:
    """The column-span diagnostic (gainbench.evaluation.analysis.column_span) of the weights in ``targets``,
    cumulative against the base model, after the last stage, every stage, or never."""

    targets: tuple[str, ...] = ("attn_out", "ffn_down")
    stages: str = "last"   # last | all | none

    def __post_init__(self):
        if self.stages not in ("last", "all", "none"):
            raise GainbenchError(f"eval.diagnostics.stages must be last, all or none, "
                                 f"got {self.stages!r}")

    def runs_at(self, stage: int, last_stage: int) -> bool:
        if stage == 0 or not self.targets or self.stages == "none":
            return False
        return self.stages == "all" or stage == last_stage


@dataclass(frozen=True)
class RunSettings:
    run_id: str
    seed: int
    model: ModelSpec
    method_name: str
    method_options: dict
    sequence_name: str
    domains: tuple[DomainSpec, ...]
    seq_len: int
    train_tokens: int
    val_tokens: int
    train: TrainSettings
    eval_batch_size: int
    eval_stride: int | None   # None: non-overlapping blocks; else a sliding window of seq_len
    lm_eval: LmEvalSettings
    diagnostics: DiagnosticSettings
    analysis: AnalysisSettings
    resolved_config: dict
    # where results go and how they are shown (not part of the run id)
    results_dir: str = "runs"
    device: str = "auto"
    logger: dict | None = None


def to_container(cfg) -> dict:
    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise GainbenchError(f"config value(s) {', '.join(missing)} must be set, e.g. "
                             f"`python -m gainbench ... {missing[0]}=<value>`")
    return OmegaConf.to_container(cfg, resolve=True)


# A key named like a credential (hf_token, api_key, wandb_key, secret, password): its value would
# be written to run.json and wandb. Credentials belong in the environment (HF_TOKEN, WANDB_API_KEY).
SECRET_KEY = re.compile(r"(^|_)(api_key|secret|password|passwd)$|^(hf_|auth_|access_|api_|wandb_)?(token|key)$",
                        re.IGNORECASE)


def refuse_secrets(config: dict, where: str = "") -> None:
    for key, value in config.items():
        path = f"{where}.{key}" if where else str(key)
        if SECRET_KEY.search(str(key)):
            raise GainbenchError(f"config key '{path}' looks like a credential, and the resolved "
                                 "config is written to run.json and wandb; remove it and set the "
                                 "credential in the environment instead (HF_TOKEN, WANDB_API_KEY)")
        if isinstance(value, dict):
            refuse_secrets(value, path)


def run_id_for(config: dict) -> str:
    """``<model>-<method>-<sequence>-seed<seed>-<hash of everything that changes results>``."""
    identity = {k: v for k, v in config.items() if k not in NON_IDENTITY_KEYS}
    if isinstance(identity.get("train"), dict):
        identity["train"] = {k: v for k, v in identity["train"].items()
                             if k not in EXECUTION_TRAIN_KEYS and NEUTRAL_TRAIN_VALUES.get(k, object()) != v}
    if identity.get("analysis", NO_ANALYSIS) == NO_ANALYSIS:
        identity.pop("analysis", None)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    name = f"{config['model']['name']}-{config['method']['name']}-{config['sequence']['name']}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) + f"-seed{config['seed']}-{digest[:8]}"


def settings_from_config(cfg) -> RunSettings:
    config = to_container(cfg)
    refuse_secrets(config)
    sequence, train, evaluation = config["sequence"], config["train"], config["eval"]
    domain_table = sequence.get("domains") or {}
    order = list(sequence.get("order") or domain_table)
    unknown = [d for d in order if d not in domain_table]
    if unknown:
        raise GainbenchError(f"sequence '{sequence['name']}' has no domain(s) {unknown}; known: "
                             f"{sorted(domain_table)} (set sequence.order to a subset of them)")
    if not order:
        raise GainbenchError(f"sequence '{sequence['name']}' has no domains; set sequence.order")
    try:
        domains = tuple(DomainSpec(name=name, **domain_table[name]) for name in order)
    except TypeError as err:
        raise GainbenchError(f"sequence '{sequence['name']}': a domain entry has a bad key ({err}); "
                             "accepted: source, licence, description, validation_percent, min_chars, "
                             "train_tokens, val_tokens") from None
    method = dict(config["method"])
    lm_eval = dict(evaluation.get("lm_eval") or {})
    stages = lm_eval.get("stages", "all")
    try:
        model = ModelSpec(**config["model"])
    except TypeError as err:
        raise GainbenchError(f"model config '{config['model'].get('name')}': {err}; see "
                             "gainbench/models/loading.py ModelSpec for the accepted keys") from None
    return RunSettings(
        run_id=run_id_for(config),
        seed=int(config["seed"]),
        model=model,
        method_name=method.pop("name"),
        method_options=method.get("options") or {},
        sequence_name=sequence["name"],
        domains=domains,
        seq_len=int(train["seq_len"]),
        train_tokens=int(train["tokens_per_stage"]),
        val_tokens=int(evaluation["val_tokens"]),
        train=TrainSettings(
            lr=float(train["lr"]), batch_size=int(train["batch_size"]),
            weight_decay=float(train.get("weight_decay", 0.0)),
            schedule=train.get("schedule", "cosine"),
            warmup_fraction=float(train.get("warmup_fraction", 0.1)),
            max_grad_norm=float(train.get("max_grad_norm", 1.0)),
            checkpoint_every=int(train.get("checkpoint_every", 0)),
            nonfinite=str(train.get("nonfinite", "stop")),
            strategy=str(train.get("strategy", "single")),
            shard_weights=bool(train.get("shard_weights", False)),
            grad_accum_steps=int(train.get("grad_accum_steps", 1)),
            activation_checkpointing=bool(train.get("activation_checkpointing", False)),
            precision=str(train.get("precision", "fp32")),
        ),
        eval_batch_size=int(evaluation.get("batch_size", 8)),
        # absent from eval/default.yaml (add it with +eval.stride=N) so default run ids stay put
        eval_stride=int(evaluation["stride"]) if evaluation.get("stride") else None,
        lm_eval=LmEvalSettings(
            tasks=tuple(lm_eval.get("tasks") or ()),
            num_fewshot=int(lm_eval.get("num_fewshot", 0)),
            limit=lm_eval.get("limit"),
            batch_size=int(lm_eval.get("batch_size", 8)),
            stages=stages if isinstance(stages, str) else tuple(int(s) for s in stages),
            include_path=lm_eval.get("include_path"),  # +eval.lm_eval.include_path=DIR
        ),
        diagnostics=DiagnosticSettings(
            targets=tuple((evaluation.get("diagnostics") or {}).get("targets") or ()),
            stages=(evaluation.get("diagnostics") or {}).get("stages", "none"),
        ),
        analysis=AnalysisSettings.from_config(config.get("analysis")),
        resolved_config=config,
        results_dir=str(config.get("results_dir", "runs")),
        device=str(config.get("device", "auto")),
        logger=config.get("logger") or None,
    )

"""Every setting of a run, its default, its check and its part in the run id, in one place.

``configs/`` mirrors these dataclasses: ``train/default.yaml``, ``eval/default.yaml``,
``logger/none.yaml``, ``analysis/none.yaml``, the ``model:`` base block of ``config.yaml`` and the
``<<: *domain`` block of each sequence file hold exactly the defaults declared here (a test keeps
them equal), so every setting is a plain ``key=value`` override, no ``+`` needed. Presets
(``model/*.yaml``, ``method/*.yaml``, ``experiment/*.yaml``) set what differs.

Reading a config (:func:`read_config`) is strict, and happens before anything is loaded or
written: a key the schema does not declare is refused (naming the nearest known one), even when
added with ``+``; so is a value of the wrong type or out of its range, a credential-like key
anywhere, a stage budget under one optimiser step, a duplicate domain. Method options are the one
free-form block: the method classes check them (``gainbench.methods.make_method``).

Run ids
    ``<model>-<method>-<sequence>-seed<seed>-<8 hex>``, the hex a sha256 of the *identity* fields
    of the typed config (what is measured) as sorted JSON. Whether a field is identity is declared
    beside it (``role``): ``execution`` fields (``train.strategy``, ``shard_weights``,
    ``grad_accum_steps``, ``activation_checkpointing``, ``checkpoint_every``, ``results_dir``,
    ``device``, ``eval.val_min_documents``, which only refuses data, and ``save_model`` and
    ``save_adapters``, which only keep more of it) say how or where a run computes the same
    numbers, and ``presentation`` fields
    (``logger``, ``model.download_hint``) how it is shown; neither is hashed, so a job requeued
    on other hardware, with another logger or another results root resumes its own folder.

Schema version 1
    is the layout the ids had before this schema existed (the resolved YAML, less a few keys), so
    every committed run folder keeps its id (tests/test_schema.py checks each one): a field
    added since then is left out of the hash while it holds its declared ``neutral`` value
    (``train.betas``, ``precision``, ``nonfinite``, ``eval.stride``, ``eval.lm_eval.include_path``,
    GAIN's ``absorb_each_stage``, ``lr_scale``; ``analysis`` while no analysis runs), optional
    per-domain keys likewise, and a tiny model's ``architecture``, ``tokenizer_vocab_size`` and
    ``init_seed`` count only for ``source: tiny``. Numbers are hashed as written (``1`` and ``1.0``
    for a float setting give different ids, as they always did); a whole number written as a float
    for an integer setting (``1e6``) is read as an int, the one input whose v1 id differs from the
    id before the schema. Version 1 adds nothing to the hashed payload; a later version that
    changes what an existing field means adds ``schema_version`` to it, moving every id once.

Validation sets, training pools and clean splits (issue 15)
    ``eval.val_doc_tokens`` (64) keeps the first 64 tokens of each validation document, in the
    split's hash order, so ``eval.val_tokens`` (1024, what the embedded default's ~10-minute
    budget scores after each of its 9 stages) come from 16 documents per domain instead of 1-11
    (kjv_bible 2 chapters, python_code 1 file): the noise a document carries can be resampled,
    and 64 tokens still hold a sentence or two of each (a Wikipedia summary's median is ~110
    SmolLM2 tokens, a Bible chapter's ~820, a networkx file's ~2,100). Fewer, longer slices
    would leave too few documents to bootstrap; shorter ones score mostly openings.
    ``eval.val_min_documents`` (16, what 1024 tokens hold at 64 per document) refuses a
    validation set from fewer documents (a larger cap, whole documents, a domain with few of
    them; python_docs' 79 topics take validation_percent 35 to reach it); a budget too small to
    hold that many capped documents (a test's 256 tokens) needs as many as it holds.
    ``train.pool_factor`` (4) packs up to four stage budgets of each domain's training text, and
    each stage draws its budget from that pool with the stage's seed
    (``DomainData.stage_blocks``): two seeds share about a quarter of their text, so a seed
    changes which text trains, not only its order. ``eval.val_dedup`` drops training documents
    that hold 15% or more of a validation document's 12-word runs (gainbench/data/dedup.py: on
    embedded8, 22 of ~14,600 training documents, from pydoc's ``specialnames`` holding all of
    ``attribute-access`` to ``sparse6.py`` holding 17% of ``graph6.py``).
    At their neutral values (``val_doc_tokens`` null, ``pool_factor`` 1, no screen) these pack
    exactly as runs did before them, so they need no schema version: their non-neutral defaults
    move default ids by themselves (the minimum of documents is a check, not hashed),
    and :func:`read_config` with ``stored=True`` reads a recorded config that lacks them (a run
    made before them) at those neutral values, so every committed run keeps its id.

Learning-rate bound
    ``train.lr`` must be > 0 and small enough for torch's AdamW step, which computes in fp32
    whatever the weights' dtype: its first step size is ``lr / (1 - beta1)`` and its decay factor
    ``1 - lr * weight_decay``, and a value past fp32's largest (3.4e38) stops the step with
    "value cannot be converted to type float without overflow". So ``lr <= 3.4e38 * (1 - beta1)``
    (3.4e37 at beta1 = 0.9) and ``lr * weight_decay <= 3.4e38``. Rates below that bound but far
    too large to be useful are allowed on purpose: they give a NaN/inf loss, which
    ``train.nonfinite`` reports with the step and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gainbench.config.checks import check_across_groups
from gainbench.config.evaluation import DiagnosticSettings, EvalSettings, LmEvalSettings
from gainbench.config.fields import (EXECUTION, PRESENTATION, check_fields, check_path, dump,
                                     identity, parse, refuse_secrets, setting)
from gainbench.data.domains import DomainSpec
from gainbench.distributed import STRATEGIES
from gainbench.errors import GainbenchError
from gainbench.files import json_digest
from gainbench.models.loading import ModelSpec

SCHEMA_VERSION = 1
FP32_MAX = 3.4028234663852886e38
PRECISIONS = ("fp32", "bf16")   # autocast of the training forward/backward (training/loop.py)
# transformers schedulers that run from (optimizer, warmup steps, training steps) alone
SCHEDULES = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts",
             "polynomial", "inverse_sqrt")


@dataclass(frozen=True)
class TrainSettings:
    """``train:``: training budget and optimiser, per stage (configs/train/default.yaml)."""

    lr: float = setting(positive=True, doc="AdamW learning rate (the YAML default: the method's lr)")
    seq_len: int = setting(256, min=2, doc="tokens per packed block, train and validation")
    batch_size: int = setting(4, min=1, doc="blocks per optimiser step (the global batch)")
    tokens_per_stage: int = setting(8192, doc="train tokens per stage, at least one step's worth")
    pool_factor: int = setting(4, min=1, neutral=1,
                               doc="each domain's training pool: up to this many stage budgets of text; "
                                   "a seed draws a stage's blocks from it")
    weight_decay: float = setting(0.0, min=0, doc="never applied to GAIN/(IA)^3 scales")
    schedule: str = setting("cosine", choices=SCHEDULES, doc="transformers scheduler name")
    warmup_fraction: float = setting(0.1, min=0, max=1, doc="of the stage's steps")
    max_grad_norm: float = setting(1.0, min=0, doc="gradient clipping; 0 = none")
    betas: tuple[float, float] = setting((0.9, 0.999), neutral=(0.9, 0.999), doc="AdamW betas")
    precision: str = setting("fp32", choices=PRECISIONS, neutral="fp32",
                             doc="autocast of the training forward/backward; weights and AdamW stay fp32")
    nonfinite: str = setting("stop", choices=("stop", "skip"), neutral="stop",
                             doc="a NaN/inf loss: stop with an error, or skip that batch")
    # How a step is computed, not what it computes: batch_size stays the global batch whatever
    # the number of processes and micro-batches.
    strategy: str = setting("single", choices=STRATEGIES, role=EXECUTION,
                            doc="one process per device: torchrun --nproc_per_node=N -m gainbench ...")
    shard_weights: bool = setting(False, role=EXECUTION, doc="fsdp: weights stay sharded all run")
    grad_accum_steps: int = setting(1, min=1, role=EXECUTION, doc="micro-batches per process per step")
    activation_checkpointing: bool = setting(False, role=EXECUTION, doc="recompute activations in backward")
    checkpoint_every: int = setting(0, min=0, role=EXECUTION, doc="steps between in-stage checkpoints; 0 = none")

    def __post_init__(self):
        check_fields(self, "train")
        if not all(0 <= b < 1 for b in self.betas):
            raise GainbenchError(f"train.betas must be two numbers in [0, 1), got {list(self.betas)}; "
                                 "fix train.betas, e.g. train.betas=[0.9,0.999]")
        lr_max = min(FP32_MAX * (1 - self.betas[0]),
                     FP32_MAX / self.weight_decay if self.weight_decay > 0 else FP32_MAX)
        if not self.lr <= lr_max:
            raise GainbenchError(f"train.lr={self.lr} is past what AdamW's fp32 step can hold "
                                 f"(lr/(1-beta1) and lr*weight_decay must stay under 3.4e38, so "
                                 f"lr <= {lr_max:.3g}); lower train.lr")
        if self.shard_weights and self.strategy != "fsdp":
            raise GainbenchError("train.shard_weights=true keeps the weights sharded by FSDP; "
                                 f"use it with train.strategy=fsdp (got {self.strategy!r})")


@dataclass(frozen=True)
class PerTokenAnalysis:
    domains: tuple[str, ...] = setting((), doc="domains whose per-token losses are saved")
    stages: tuple[int, ...] = setting((), doc="stages compared, consecutive listed pairs")


@dataclass(frozen=True)
class InterpolationAnalysis:
    stages: tuple[int, ...] = setting((), doc="stages k: PPL along W0 + alpha (W1 - W0)")
    alphas: tuple[float, ...] = setting((0.0, 0.25, 0.5, 0.75, 1.0))


@dataclass(frozen=True)
class CombinationAnalysis:
    stages: tuple[int, ...] = setting((), doc="two consecutive stages [A, A+1]")
    grid: tuple[float, ...] = setting((0.0, 0.5, 1.0))

    def __post_init__(self):
        if self.stages:
            a, b = (tuple(self.stages) + (None, None))[:2]
            if len(self.stages) != 2 or b != a + 1 or a < 1:
                raise GainbenchError(f"analysis.combination.stages must be two consecutive stages "
                                     f">= 1, e.g. [1, 2]; got {list(self.stages)}")


@dataclass(frozen=True)
class AnalysisSettings:
    """``analysis:``: the figure analyses (configs/analysis/figures.yaml); none by default."""

    name: str = setting("none", doc="a label: none | figures")
    per_token: PerTokenAnalysis = setting(factory=PerTokenAnalysis)
    interpolation: InterpolationAnalysis = setting(factory=InterpolationAnalysis)
    combination: CombinationAnalysis = setting(factory=CombinationAnalysis)

    @property
    def any(self) -> bool:
        """Whether any analysis runs at some stage."""
        return bool(self.per_token.stages or self.interpolation.stages or self.combination.stages)

    # the flat names the stage analyses read
    per_token_domains = property(lambda self: self.per_token.domains)
    per_token_stages = property(lambda self: self.per_token.stages)
    interpolation_stages = property(lambda self: self.interpolation.stages)
    alphas = property(lambda self: self.interpolation.alphas)
    combination_stages = property(lambda self: self.combination.stages)
    combination_grid = property(lambda self: self.combination.grid)


@dataclass(frozen=True)
class LoggerSettings:
    """``logger:``: where rows are mirrored besides the run folder, and how often training
    reports progress in a log that is not a terminal (configs/logger/)."""

    name: str = setting("none", choices=("none", "wandb"))
    project: str = setting("gainbench")
    entity: str | None = setting(None)
    mode: str = setting("offline", choices=("offline", "online", "disabled"))
    progress_seconds: float = setting(30.0, min=0,
                                      doc="without a terminal (a SLURM log): seconds between "
                                          "one-line training progress reports; 0 = none")


@dataclass(frozen=True)
class MethodConfig:
    """``method:`` (configs/method/*.yaml): the method's registry name, its conventional lr and
    its options, which the method class checks."""

    name: str = setting()
    lr: float = setting(positive=True, doc="the method's default learning rate (train.lr follows it)")
    # GAIN's absorb_each_stage came after schema version 1: at its default it is not hashed
    options: dict = setting(factory=dict, neutral_entries={"absorb_each_stage": True})


@dataclass(frozen=True)
class SequenceConfig:
    """``sequence:`` (configs/sequence/*.yaml): a table of domains and the order they are
    trained in (every domain of the table, in table order, when ``order`` is empty)."""

    name: str = setting()
    order: tuple[str, ...] = setting((), neutral=())
    domains: dict[str, DomainSpec] = setting(factory=dict)

    def __post_init__(self):
        order, table = list(self.order or self.domains), self.domains
        if not order:
            raise GainbenchError(f"sequence '{self.name}' has no domains; set sequence.order")
        unknown = [d for d in order if d not in table]
        if unknown:
            raise GainbenchError(f"sequence '{self.name}' has no domain(s) {unknown}; known: "
                                 f"{sorted(table)} (set sequence.order to a subset of them)")
        repeated = sorted({d for d in order if order.count(d) > 1})
        if repeated:
            raise GainbenchError(f"sequence.order lists {', '.join(repeated)} more than once; a "
                                 "domain is one stage and one column of the results: list each once")

    @property
    def ordered(self) -> tuple[DomainSpec, ...]:
        return tuple(self.domains[name] for name in (self.order or tuple(self.domains)))


@dataclass(frozen=True, kw_only=True)
class GainbenchConfig:
    """The whole config of one run (configs/config.yaml and its groups)."""

    seed: int = setting(0, min=0, doc="training data order, initialisation, lm-eval sampling")
    device: str = setting("auto", role=EXECUTION, doc="auto | cpu | cuda | cuda:1 ...")
    results_dir: str = setting("runs", role=EXECUTION, doc="one folder per run: <results_dir>/<run_id>/")
    # What a run keeps besides its results (gainbench/results/export.py); never in the run id.
    save_model: str = setting("none", choices=("none", "final", "every_stage"), role=EXECUTION,
                              doc="the absorbed model as an HF folder: <run>/model/final/ after the "
                                  "last stage, or <run>/model/stage_<k>/ after each")
    save_adapters: bool = setting(False, role=EXECUTION,
                                  doc="PEFT methods (LoRA family, (IA)^3): each stage's adapter, before "
                                      "the merge, as <run>/adapters/stage_<k>/")
    lr_scale: float | None = setting(None, positive=True, neutral=None,
                                     doc="experiment=lr_sweep: train.lr is method.lr times this")
    model: ModelSpec = setting()
    method: MethodConfig = setting()
    sequence: SequenceConfig = setting()
    train: TrainSettings = setting()
    eval: EvalSettings = setting(factory=EvalSettings)
    logger: LoggerSettings = setting(factory=LoggerSettings, role=PRESENTATION)
    analysis: AnalysisSettings = setting(factory=AnalysisSettings, neutral=AnalysisSettings())

    def __post_init__(self):
        check_across_groups(self)


def read_config(config: dict, stored: bool = False) -> GainbenchConfig:
    """The typed config of a plain (resolved) config dict, or a one-line GainbenchError.
    ``stored=True``: a config a run recorded (run.json), whose missing keys predate it and so
    read as their neutral values."""
    refuse_secrets(config)
    return parse(GainbenchConfig, config, "", stored)


def check_override_path(path: str) -> None:
    """Refuse ``train.lrr`` in ``python -m gainbench train.lrr=1e-3`` before Hydra composes."""
    check_path(GainbenchConfig, path.split("."))


def run_id(config: GainbenchConfig) -> str:
    """``<model>-<method>-<sequence>-seed<seed>-<hash of the identity fields>``."""
    payload = identity(config)
    if SCHEMA_VERSION != 1:   # version 1 is the layout the ids had before the schema
        payload["schema_version"] = SCHEMA_VERSION
    digest = json_digest(payload)
    name = f"{config.model.name}-{config.method.name}-{config.sequence.name}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) + f"-seed{config.seed}-{digest[:8]}"


__all__ = ["AnalysisSettings", "DiagnosticSettings", "DomainSpec", "EvalSettings", "GainbenchConfig",
           "LmEvalSettings", "LoggerSettings", "MethodConfig", "ModelSpec", "SCHEMA_VERSION",
           "SequenceConfig", "TrainSettings", "check_override_path", "dump", "read_config", "run_id"]

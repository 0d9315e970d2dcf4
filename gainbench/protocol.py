"""The sequential-adaptation protocol (DESIGN.md section 3), one run = one model x method x sequence.

    stage 0: evaluate the base model on every domain and on the lm-eval tasks (or take the rows
             an earlier run in the results folder computed for the same base: evaluation/base_rows.py)
    for k in 1..T: attach, train on domain k, absorb, evaluate every domain (eval.cells=matched:
                   domains k and k+1 before T), lm-eval, write, mark done

What is measured is a list of evaluators (gainbench.evaluation.evaluators); what differs between
methods is the method's own (gainbench.methods.base.Method); where the model lives and which
process writes, gathers or waits is the placement's (gainbench.placement), built once here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch

from gainbench import provenance
from gainbench.data.domains import DomainData, prepare_domain, read_documents
from gainbench.data.packing import tokenizer_training_texts
from gainbench.errors import GainbenchError, first_line
from gainbench.evaluation.analysis.stage_analyses import StageAnalyses
from gainbench.evaluation.base_rows import BaseRows
from gainbench.evaluation.evaluators import ColumnSpan, Evaluator, LmEval, Perplexity
from gainbench.methods import Method, count_parameters, make_method
from gainbench.models import context_length, load_model
from gainbench.placement import Placement
from gainbench.results.export import ModelExport, save_adapter
from gainbench.results.store import RunStore
from gainbench.results.summary import print_summary
from gainbench.results.wandb_mirror import WandbMirror
from gainbench.settings import RunSettings, settings_from_config
from gainbench.stopping import StagePointer, stops_cleanly
from gainbench.training.checkpoint import StageCheckpoint
from gainbench.training.loop import train_stage


def run(cfg) -> Path:
    """Run (or resume) the protocol for one composed config; returns the run folder.
    Ctrl-C or SIGTERM raise :class:`~gainbench.errors.Interrupted` naming the stage in flight."""
    with stops_cleanly() as in_flight:
        return _run(cfg, in_flight)


def _run(cfg, in_flight: StagePointer) -> Path:
    settings = settings_from_config(cfg)
    method = make_method(settings.method_name, **settings.method_options)
    store = RunStore(Path(settings.results_dir) / settings.run_id)
    store.check(settings.run_id)
    if _all_done(store.finished_stages(), settings):
        store.repair_record()
        print(f"gainbench: run {settings.run_id} already finished ({store.run_dir}); nothing to do")
        print_summary(store.rows(), [d.name for d in settings.domains],
                      settings.lm_eval.headline_metrics)
        return store.run_dir

    if settings.train.strategy != "single" and settings.analysis.any:
        raise GainbenchError("analysis=figures runs in one process; run it with "
                             "train.strategy=single (the perplexity rows are the same)")
    if settings.train.shard_weights and not method.supports_sharded_weights:
        raise GainbenchError(f"method '{settings.method_name}' needs whole weight matrices, which "
                             "train.shard_weights=true never gathers; use train.shard_weights=false "
                             "(the weights must then fit one device)")
    placement = Placement.create(settings.train.strategy, settings.train.shard_weights,
                                 settings.device)
    if placement.is_main:
        _check_writable(Path(settings.results_dir))
    model, tokenizer, domains = _setup_model_and_data(settings, placement)
    # after every input check: bad input leaves no folder behind; only rank 0 writes
    with store.lock() if placement.is_main else contextlib.nullcontext():
        run_dir = _run_stages(settings, method, store, model, tokenizer, domains, placement,
                              in_flight)
    # Only after success: on an error the traceback can hold a live DDP reducer, which blocks the
    # group's teardown; the process exits with the error and the launcher stops the other ranks.
    placement.close()
    return run_dir


def _all_done(done: list[int], settings: RunSettings) -> bool:
    """Whether the finished stages ``done`` are every stage, the base model's included."""
    return len(done) == len(settings.domains) + 1


def _check_writable(results_dir: Path) -> None:
    """Before the model loads: a results folder that cannot be written is a one-line error (the
    nearest existing folder is checked, so nothing is created yet)."""
    existing = next(p for p in [results_dir, *results_dir.absolute().parents] if p.exists())
    try:  # a real write: permission bits say nothing to root, or of a read-only mount
        with tempfile.TemporaryFile(dir=existing, prefix=".gainbench-write-check-"):
            pass
    except OSError as err:
        raise GainbenchError(f"results_dir={results_dir} cannot be written ({existing}: "
                             f"{err.strerror or first_line(err)}); set results_dir to a folder "
                             "you can write") from None


def _run_stages(settings, method, store, model, tokenizer, domains, placement: Placement,
                in_flight: StagePointer) -> Path:
    last_stage = len(settings.domains)
    done = placement.broadcast(store.finished_stages())  # again, under rank 0's lock
    if _all_done(done, settings):
        print(f"gainbench: run {settings.run_id} finished meanwhile ({store.run_dir}); nothing to do")
        return store.run_dir
    if placement.is_main:
        store.repair_record()
    meta = store.meta() or provenance.run_record(
        settings.run_id, settings.resolved_config, model, domains, placement)
    # built before any stage changes the model: the diagnostic copies the base weights
    evaluators = _evaluators(settings, method, store, model, tokenizer, domains, placement)
    # stage 0's rows, computed once per results folder by the first run that needs them
    base_rows = BaseRows.for_run(settings, model, placement)
    # the run's optimiser steps keep counting across stages and resumes (train_steps)
    mirror = WandbMirror.for_run(settings, store.run_dir, enabled=placement.is_main,
                                 steps_done=sum(meta.get("train_steps", {}).values()))
    if done:
        placement.say(f"gainbench: resuming run {settings.run_id} after stage {max(done)}")
        model = _replay_finished_stages(model, method, store, done, evaluators, placement)

    for stage in range(max(done, default=-1) + 1, last_stage + 1):
        in_flight.stage = stage
        started = time.perf_counter()
        training = None
        for evaluator in evaluators:
            evaluator.before_stage(model, stage)
        with _explain_out_of_memory(settings, stage):
            if stage > 0:
                model, training = _train_and_absorb(model, method, domains, stage, settings, store,
                                                    placement, on_step=mirror.log_step)
            rows = []
            for evaluator in evaluators:
                rows += base_rows.measure(evaluator, model, stage)
                meta.update(evaluator.provenance)
        if stage == 0:
            meta["base_rows"] = base_rows.record
        if training is not None:
            rows += training.rows()
            meta["trainable_params"] = training.trainable_params   # an int; the row's value a float
            meta.setdefault("train_steps", {})[str(stage)] = training.steps
        meta["stage_seconds"][str(stage)] = round(time.perf_counter() - started, 2)
        if placement.is_main:
            store.finish_stage(stage, [_with_run_columns(r, settings, stage) for r in rows], meta)
        placement.barrier()
        mirror.log_stage(stage, rows, steps=training.steps if training else 0)
        placement.say(f"gainbench: stage {stage}/{last_stage} done in "
                      f"{meta['stage_seconds'][str(stage)]} s")

    mirror.finish(store.run_dir)   # with the run's summary metrics and its rows as an artifact
    if placement.is_main:
        print_summary(store.rows(), [d.name for d in settings.domains],
                      settings.lm_eval.headline_metrics)
    placement.say(f"gainbench: results in {store.run_dir}")
    return store.run_dir


def _evaluators(settings: RunSettings, method: Method, store: RunStore, model, tokenizer,
                domains: list[DomainData], placement: Placement) -> list[Evaluator]:
    """What is measured after every stage, in the order its rows are written."""
    last_stage = len(domains)

    def perplexity(**where) -> Perplexity:
        return Perplexity(domains, settings.eval_batch_size, settings.eval_stride,
                          context=settings.seq_len, **where)

    # the analyses run in one process, and their grids need pooled rows only
    analyses_perplexity = perplexity(per_document=False)
    return [
        perplexity(placement=placement, cells=settings.eval_cells),
        LmEval(settings.lm_eval, tokenizer, settings.seed, last_stage, placement),
        ColumnSpan(settings.diagnostics, model, method, last_stage, placement),
        StageAnalyses(settings.analysis, store.run_dir, domains,
                      evaluate=lambda m: analyses_perplexity(m, stage=None),
                      load_stage_state=store.load_stage_state,
                      composition=method.update_composition,
                      batch_size=settings.eval_batch_size),
        ModelExport(settings.config.save_model, store.run_dir, tokenizer, last_stage, placement),
    ]


@contextlib.contextmanager
def _explain_out_of_memory(settings: RunSettings, stage: int):
    """Out of memory: name what was being run and the keys that shrink it (exit code 2)."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        train = settings.train
        raise GainbenchError(
            f"out of memory in stage {stage} with model '{settings.model.name}' "
            f"(dtype {settings.model.dtype}), method '{settings.method_name}', "
            f"train.batch_size={train.batch_size} over train.grad_accum_steps={train.grad_accum_steps} "
            f"micro-batches, train.seq_len={settings.seq_len}, eval.batch_size="
            f"{settings.eval_batch_size}, train.strategy={train.strategy}, train.shard_weights="
            f"{str(train.shard_weights).lower()} ({first_line(err, 'out of memory')}); "
            "raise train.grad_accum_steps, set train.activation_checkpointing=true or "
            "train.precision=bf16, lower eval.batch_size, or use train.strategy=fsdp (with "
            "train.shard_weights=true if the weights alone fill a device) on more devices "
            "(lowering train.batch_size or train.seq_len changes the experiment)") from None


def _train_and_absorb(model, method: Method, domains: list[DomainData], stage: int,
                      settings: RunSettings, store: RunStore, placement: Placement, on_step=None):
    """Attach a fresh adapter, train it on the stage's domain, save what reproduces the stage,
    absorb. Returns the plain model and the training statistics."""
    domain, seed = domains[stage - 1], _stage_seed(settings.seed, stage)
    torch.manual_seed(seed)  # adapter initialisation (e.g. LoRA's A)
    with placement.editing(model):
        adapted = method.attach(model)
    params = method.trainable_parameters(adapted)
    _warn_if_low_precision(params, settings)
    # the seed draws the stage's blocks from the domain's pool (and their order, and the init)
    blocks = method.training_blocks(domain.stage_blocks(seed),
                                    [d.train_blocks for d in domains[:stage - 1]], seed)
    checkpoint = (StageCheckpoint(store.partial_stage_path(stage), settings.train.checkpoint_every,
                                  writer=placement.is_main)
                  if settings.train.checkpoint_every else None)
    training = train_stage(adapted, params, blocks, settings.train, seed=seed,
                           exempt_from_weight_decay=method.exempt_from_weight_decay,
                           regularization=lambda: method.regularization(adapted),
                           desc=f"stage {stage}/{len(domains)} train {domain.name}",
                           checkpoint=checkpoint, ranks=placement.ranks, on_step=on_step,
                           progress_seconds=(settings.logger or {}).get("progress_seconds", 30.0))
    method.after_training(adapted, blocks, settings.train.batch_size)
    state = placement.gather(method.stage_state(adapted))
    if settings.config.save_adapters:  # PEFT's own folder, before the merge (rank 0 writes)
        save_adapter(method, adapted, state, store.run_dir / "adapters" / f"stage_{stage}", placement)
    if placement.is_main:
        store.save_stage_state(stage, state, keep_only_latest=method.state_is_full_model)
        if checkpoint:  # the stage's own state now covers it
            checkpoint.clear()
    training = dataclasses.replace(training, trainable_params=count_parameters(params.values()))
    with placement.editing(adapted):
        return method.absorb(adapted), training


def _warn_if_low_precision(params: dict, settings: RunSettings) -> None:
    """Adapters (GAIN's scales, PEFT's factors) train in fp32 on a bf16 model, but full fine-tuning
    would update the bf16 weights themselves: AdamW steps below ~0.4% of a weight round away, an
    unequal footing. Said once per process; the config (model.dtype) records it."""
    low = sorted({str(p.dtype).removeprefix("torch.") for p in params.values()
                  if p.dtype in (torch.bfloat16, torch.float16)})
    if low:
        _warn_once(f"method '{settings.method_name}' trains {'/'.join(low)} weights directly "
                   f"(model.dtype={settings.model.dtype}): updates smaller than the format's "
                   "resolution are lost; for mixed precision (fp32 weights and optimiser, bf16 "
                   "compute) use model.dtype=float32 train.precision=bf16")


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    warnings.warn(message, stacklevel=2)


def _stage_seed(seed: int, stage: int) -> int:
    # Each stage seeds itself, so a resumed run trains exactly as an uninterrupted one.
    return seed * 1000 + stage


def _setup_model_and_data(settings: RunSettings, placement: Placement):
    # Model first, so a bad model id fails before any data is read; tiny models fit their
    # BPE to the training text, so documents are read lazily and only once.
    documents: dict[str, list] = {}

    def documents_of(spec):
        if spec.name not in documents:
            documents[spec.name] = read_documents(spec)
        return documents[spec.name]

    model, tokenizer = placement.load(
        lambda device: load_model(settings.model, device,
                                  lambda: tokenizer_training_texts(settings.domains, documents_of)),
        trust_remote_code=settings.model.trust_remote_code)
    limit = context_length(model)
    if limit is not None and settings.seq_len > limit:
        raise GainbenchError(f"train.seq_len={settings.seq_len} is longer than model "
                             f"'{settings.model.name}' accepts ({limit} positions); "
                             f"set train.seq_len<={limit}")
    domains = [prepare_domain(spec, tokenizer, settings.seq_len, settings.train_tokens,
                              settings.val_tokens, documents_of(spec), settings.data_rules)
               for spec in settings.domains]
    return model, tokenizer, domains


def _replay_finished_stages(model, method: Method, store: RunStore, done: list[int],
                            evaluators: list[Evaluator], placement: Placement):
    stages = [s for s in sorted(done) if s > 0]
    if method.state_is_full_model:
        stages = stages[-1:]  # the latest full copy already contains every earlier stage
    for stage in stages:
        for evaluator in evaluators:  # rebuild the snapshots an unfinished analysis needs
            evaluator.before_stage(model, stage)
        with placement.editing(model):
            model = method.replay(model, store.load_stage_state(stage), placement)
        for evaluator in evaluators:
            evaluator.after_replay(model, stage)
    return model


def _with_run_columns(row: dict, settings: RunSettings, stage: int) -> dict:
    """A measurement as a row of rows.parquet (gainbench.results.store.ROW_SCHEMA): what the run
    is, and what trained it, on every row."""
    return {"run_id": settings.run_id, "model": settings.model.name,
            "method": settings.method_name, "seed": settings.seed,
            "sequence": settings.sequence_name, "stage": stage,
            "stage_domain": settings.domains[stage - 1].name if stage > 0 else "base",
            "stderr": float("nan"), "lr": settings.train.lr,
            "tokens_per_stage": settings.train_tokens,
            "method_options": json.dumps(settings.method_options, sort_keys=True, default=str),
            **row}

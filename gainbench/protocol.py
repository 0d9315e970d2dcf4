"""The sequential-adaptation protocol (DESIGN.md section 3), one run = one model x method x sequence.

    stage 0: evaluate the base model on every domain and on the lm-eval tasks
    for k in 1..T: attach, train on domain k, absorb, evaluate every domain, lm-eval, write, mark done

Under ``train.strategy=ddp|fsdp`` every rank runs this loop on its own full copy of the weights:
training and perplexity batches are split between ranks, lm-eval and the column-span diagnostic
run on rank 0 while the others wait, and only rank 0 touches the run folder (lock, rows, stage
state, run.json) and wandb. With ``train.shard_weights=true`` each rank holds a shard of the
weights instead (every forward pass is then collective): rank 0 alone reads the checkpoint,
lm-eval runs on every rank over the same requests (rank 0 keeps the rows), absorbing edits each
rank's rows of the weights, and the column-span diagnostic gathers one weight matrix at a time
for rank 0 to analyse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import platform
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gainbench import distributed, provenance
from gainbench.evaluation.analysis.column_span import diagnose, snapshot_weights
from gainbench.evaluation.analysis.stage_analyses import StageAnalyses
from gainbench.data.replay import mix_in_replay
from gainbench.data.domains import DomainData, prepare_domain, read_documents, split_documents
from gainbench.errors import GainbenchError, first_line
from gainbench.evaluation.perplexity import strided_nll, validation_nll
from gainbench.methods import Method, count_parameters, make_method
from gainbench.methods.gain import effective_weight
from gainbench.models import context_length, load_model
from gainbench.results.store import RunStore
from gainbench.results.summary import print_summary
from gainbench.results.wandb_mirror import WandbMirror
from gainbench.settings import RunSettings, settings_from_config
from gainbench.training.checkpoint import StageCheckpoint
from gainbench.training.loop import train_stage
from gainbench.training.sharding import (OffloadedShard, gathered, is_sharded, on_sharded_weights,
                                        shard_model, whole)


def run(cfg) -> Path:
    """Run (or resume) the protocol for one composed config; returns the run folder."""
    settings = settings_from_config(cfg)
    method = make_method(settings.method_name, **settings.method_options)
    results_dir = Path(settings.resolved_config.get("results_dir", "runs"))
    store = RunStore(results_dir / settings.run_id)
    store.check(settings.run_id)
    last_stage = len(settings.domains)
    done = store.finished_stages()
    if len(done) == last_stage + 1:
        print(f"gainbench: run {settings.run_id} already finished ({store.run_dir}); nothing to do")
        print_summary(store.rows(), [d.name for d in settings.domains])
        return store.run_dir

    if settings.train.strategy != "single" and settings.analysis.any:
        raise GainbenchError("analysis=figures runs in one process; run it with "
                             "train.strategy=single (the perplexity rows are the same)")
    if settings.train.shard_weights and not method.supports_sharded_weights:
        raise GainbenchError(f"method '{settings.method_name}' needs whole weight matrices, which "
                             "train.shard_weights=true never gathers; use train.shard_weights=false "
                             "(the weights must then fit one device)")
    ranks = distributed.init_ranks(settings.train.strategy)
    device = _device(settings.resolved_config.get("device", "auto"), ranks)
    model, tokenizer, domains = _setup_model_and_data(settings, device, ranks)
    # after every input check: bad input leaves no folder behind; only rank 0 writes
    with store.lock() if ranks.is_main else contextlib.nullcontext():
        run_dir = _run_stages(settings, method, store, model, tokenizer, domains, device, ranks)
    # Only after success: on an error the traceback can hold a live DDP reducer, which blocks the
    # group's teardown; the process exits with the error and the launcher stops the other ranks.
    distributed.close(ranks)
    return run_dir


def _run_stages(settings, method, store, model, tokenizer, domains, device, ranks) -> Path:
    last_stage = len(settings.domains)
    done = ranks.broadcast(store.finished_stages())  # again, under rank 0's lock
    if len(done) == last_stage + 1:
        print(f"gainbench: run {settings.run_id} finished meanwhile ({store.run_dir}); nothing to do")
        return store.run_dir
    meta = store.meta() or _initial_meta(settings, model, device, domains, ranks)
    # The diagnostic compares against the base weights: copy them before any stage changes them.
    base_weights = (_snapshot_base_weights(model, list(settings.diagnostics.targets))
                    if settings.diagnostics.stages != "none" and settings.diagnostics.targets else None)
    analyses = _stage_analyses(settings, method, store, domains)
    logger = (settings.resolved_config.get("logger") or {}) if ranks.is_main else {}
    mirror = WandbMirror(logger, settings.run_id, store.run_dir)
    say = print if ranks.is_main else (lambda *args, **kwargs: None)
    if done:
        say(f"gainbench: resuming run {settings.run_id} after stage {max(done)}")
        model = _replay_finished_stages(model, method, store, done, analyses)

    for stage in range(max(done, default=-1) + 1, last_stage + 1):
        started = time.perf_counter()
        training = None
        analyses.before_stage(model, stage)
        with _explain_out_of_memory(settings, stage):
            if stage > 0:
                model, training = _train_and_absorb(model, method, domains, stage, settings, store,
                                                    ranks)
            rows = _evaluate_perplexity(model, domains, settings, stage, ranks)
            # On rank 0 while the other ranks wait at the barrier below; on every rank when the
            # weights are sharded, since each forward pass or gathered matrix then needs them all.
            whole_model_here = ranks.is_main or is_sharded(model)
            if settings.lm_eval.runs_at(stage, last_stage) and whole_model_here:
                rows += _evaluate_lm_eval(model, tokenizer, settings, meta)
            if settings.diagnostics.runs_at(stage, last_stage) and whole_model_here:
                rows += _column_span_rows(model, base_weights, ranks)
            rows += analyses.after_stage(model, stage)
        if training is not None:
            rows += _training_rows(training)
            meta["trainable_params"] = training.trainable_params
        meta["stage_seconds"][str(stage)] = round(time.perf_counter() - started, 2)
        if ranks.is_main:
            store.finish_stage(stage, [_with_run_columns(r, settings, stage) for r in rows], meta)
        ranks.barrier()
        mirror.log_stage(stage, rows)
        say(f"gainbench: stage {stage}/{last_stage} done in {meta['stage_seconds'][str(stage)]} s")

    mirror.finish()
    if ranks.is_main:
        print_summary(store.rows(), [d.name for d in settings.domains])
    say(f"gainbench: results in {store.run_dir}")
    return store.run_dir


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
                      settings: RunSettings, store: RunStore, ranks: distributed.Ranks):
    """Attach a fresh adapter, train it on the stage's domain, save what reproduces the stage,
    absorb. Returns the plain model and the training statistics."""
    domain, seed = domains[stage - 1], _stage_seed(settings.seed, stage)
    torch.manual_seed(seed)  # adapter initialisation (e.g. LoRA's A)
    with on_sharded_weights(model):
        adapted = method.attach(model)
    params = method.trainable_parameters(adapted)
    _warn_if_low_precision(params, settings)
    blocks = domain.train_blocks
    if getattr(method, "replay_fraction", 0):  # replay_lora: earlier domains' text mixed in
        blocks = mix_in_replay(blocks, [d.train_blocks for d in domains[:stage - 1]],
                               method.replay_fraction, seed=seed)
    checkpoint = (StageCheckpoint(store.partial_stage_path(stage), settings.train.checkpoint_every,
                                  writer=ranks.is_main)
                  if settings.train.checkpoint_every else None)
    training = train_stage(adapted, params, blocks, settings.train, seed=seed,
                           exempt_from_weight_decay=method.exempt_from_weight_decay,
                           regularization=lambda: method.regularization(adapted),
                           desc=f"stage {stage}/{len(domains)} train {domain.name}",
                           checkpoint=checkpoint, ranks=ranks)
    method.after_training(adapted, blocks, settings.train.batch_size)
    if ranks.is_main or is_sharded(adapted):  # sharded tensors: every rank takes part in gathering
        state = gathered(method.stage_state(adapted), keep=ranks.is_main)
    if ranks.is_main:
        store.save_stage_state(stage, state, keep_only_latest=method.state_is_full_model)
        if checkpoint:  # the stage's own state now covers it
            checkpoint.clear()
    training = dataclasses.replace(training, trainable_params=count_parameters(params.values()))
    with on_sharded_weights(adapted):
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


def _device(name: str, ranks: distributed.Ranks) -> torch.device:
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", ranks.local_rank) if ranks.world_size > 1 else torch.device("cuda")
    return torch.device(name)


def _setup_model_and_data(settings: RunSettings, device, ranks: distributed.Ranks):
    # Model first, so a bad model id fails before any data is read; tiny models fit their
    # BPE to the training text, so documents are read lazily and only once.
    documents: dict[str, list] = {}

    def documents_of(spec):
        if spec.name not in documents:
            documents[spec.name] = read_documents(spec)
        return documents[spec.name]

    def tokenizer_texts():  # training text only, never validation
        for spec in settings.domains:
            train_docs, _ = split_documents(documents_of(spec), spec.validation_percent)
            yield from (d.text for d in train_docs[:200])

    if settings.train.shard_weights and ranks.world_size > 1:
        # Rank 0 reads the checkpoint onto its CPU; each rank then holds only its shard.
        loaded, tokenizer = (load_model(settings.model, torch.device("cpu"), tokenizer_texts)
                             if ranks.is_main else (None, None))
        tokenizer = ranks.broadcast(tokenizer)
        model = shard_model(loaded, ranks, device, settings.model.trust_remote_code)
        del loaded
    else:
        model, tokenizer = load_model(settings.model, device, tokenizer_texts)
    limit = context_length(model)
    if limit is not None and settings.seq_len > limit:
        raise GainbenchError(f"train.seq_len={settings.seq_len} is longer than model "
                             f"'{settings.model.name}' accepts ({limit} positions); "
                             f"set train.seq_len<={limit}")
    domains = [prepare_domain(spec, tokenizer, settings.seq_len, settings.train_tokens,
                              settings.val_tokens, documents_of(spec))
               for spec in settings.domains]
    return model, tokenizer, domains


def _replay_finished_stages(model, method: Method, store: RunStore, done: list[int], analyses):
    stages = [s for s in sorted(done) if s > 0]
    if method.state_is_full_model:
        stages = stages[-1:]  # the latest full copy already contains every earlier stage
    for stage in stages:
        analyses.before_stage(model, stage)  # rebuild the snapshots an unfinished analysis needs
        with on_sharded_weights(model):
            model = method.replay(model, store.load_stage_state(stage))
        analyses.after_stage(model, stage, emit=False)
    return model


def _stage_analyses(settings: RunSettings, method: Method, store: RunStore, domains):
    from gainbench.methods.gain_method import Gain

    analyses = StageAnalyses(
        settings.analysis, store.run_dir, domains,
        evaluate=lambda model: _evaluate_perplexity(model, domains, settings, stage=None,
                                                    ranks=distributed.Ranks()),
        load_stage_state=store.load_stage_state,
        is_gain=isinstance(method, Gain) and method.absorb_each_stage,
        batch_size=settings.eval_batch_size)
    analyses.check()
    return analyses


def _evaluate_perplexity(model, domains: list[DomainData], settings: RunSettings, stage: int,
                         ranks: distributed.Ranks):
    rows = []
    # disable=None: a bar on a terminal, nothing in a log file
    for domain in tqdm(domains, desc=f"stage {stage} eval" if stage is not None else "analysis eval",
                       leave=False, disable=None if ranks.is_main else True):
        if settings.eval_stride:  # sliding window: every token scored once, with up to seq_len context
            result = strided_nll(model, domain.val_blocks.flatten(), domain.val_stream_bytes,
                                 context=settings.seq_len, stride=settings.eval_stride,
                                 batch_size=settings.eval_batch_size, ranks=ranks)
        else:
            result = validation_nll(model, domain.val_blocks, domain.val_bytes,
                                    settings.eval_batch_size, ranks=ranks)
        for metric, value in (("nll", result.nll), ("ppl", result.ppl),
                              ("bpb", result.bits_per_byte)):
            rows.append(dict(eval_kind="ppl", eval_name=domain.name, metric=metric, value=value,
                             n=result.n_tokens))
    return rows


def _evaluate_lm_eval(model, tokenizer, settings: RunSettings, meta: dict):
    from gainbench.evaluation.lm_eval_bridge import run_lm_eval

    lm = settings.lm_eval
    rows, versions = run_lm_eval(model, tokenizer, list(lm.tasks), num_fewshot=lm.num_fewshot,
                                 limit=lm.limit, batch_size=lm.batch_size, seed=settings.seed,
                                 include_path=lm.include_path)
    meta["lm_eval"] = versions
    return [dict(eval_kind="lm_eval", **row) for row in rows]


def _snapshot_base_weights(model, targets: list[str]):
    """The diagnostic's base weights, on the CPU; on sharded weights each rank copies its shard."""
    if not is_sharded(model):
        return snapshot_weights(model, targets)
    with on_sharded_weights(model):  # the shards themselves, not the root's gathered copy
        weights, layout = snapshot_weights(model, targets, clone=False)
        return {name: OffloadedShard(w) for name, w in weights.items()}, layout


def _column_span_rows(model, base_weights, ranks: distributed.Ranks):
    """How much of the cumulative update leaves the base weights' spans (DESIGN.md section 2)."""
    weights, layout = base_weights
    device = next(model.parameters()).device
    rows = []
    # One matrix pair at a time, computed where the model is (the base copy waits on the CPU);
    # on sharded weights every rank gathers each pair whole and rank 0 analyses it.
    with on_sharded_weights(model):
        for name, base in weights.items():
            pair = whole(base), whole(effective_weight(model.get_submodule(name)))
            if ranks.is_main:
                rows += diagnose({name: pair[0]}, {name: pair[1]}, layout, device=device)
    return rows


def _training_rows(training):
    values = {"train_loss_mean": training.mean_loss, "train_loss_final": training.final_loss,
              "trainable_params": training.trainable_params, "train_seconds": training.seconds}
    if training.skipped_batches:  # only with train.nonfinite=skip
        values["skipped_batches"] = training.skipped_batches
    return [dict(eval_kind="train", eval_name="train", metric=k, value=float(v), n=training.tokens)
            for k, v in values.items()]


def _with_run_columns(row: dict, settings: RunSettings, stage: int) -> dict:
    return {"run_id": settings.run_id, "model": settings.model.name,
            "method": settings.method_name, "seed": settings.seed,
            "sequence": settings.sequence_name, "stage": stage,
            "stage_domain": settings.domains[stage - 1].name if stage > 0 else "base",
            "stderr": float("nan"), **row}


def _initial_meta(settings: RunSettings, model, device, domains: list[DomainData],
                  ranks: distributed.Ranks) -> dict:
    return {
        "run_id": settings.run_id,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": settings.resolved_config,
        "git": provenance.git_state(),
        "versions": provenance.package_versions(),
        "numerics": provenance.numerics(),
        "device": str(device),
        "world_size": ranks.world_size,  # processes (train.strategy in config.train)
        "host": platform.node(),
        "domains": {d.name: d.info for d in domains},
        "model_params": count_parameters(model.parameters()),
        "trainable_params": None,
        "stage_seconds": {},
        "finished_stages": [],
    }

"""What is measured after each stage, behind one small interface the protocol loops over.

    for evaluator in evaluators:
        evaluator.before_stage(model, stage)      # before the stage changes the model
    ...train and absorb...
    for evaluator in evaluators:
        rows += evaluator(model, stage)           # tidy rows (eval_kind, eval_name, metric, value, n)

On resume each finished stage is replayed instead of trained; :meth:`Evaluator.after_replay`
then rebuilds whatever state a later stage needs (a snapshot of the weights), without rows.
Anything an evaluator learns about its own provenance (lm-eval's task versions) goes into
:attr:`Evaluator.provenance`, which the protocol merges into run.json. An evaluator whose stage-0
rows depend only on the base model and its own settings says what those are in
:meth:`Evaluator.base_identity`: the protocol then computes them once per results folder and
reuses them (gainbench.evaluation.base_rows).

The evaluators here: validation perplexity on every domain, lm-eval tasks, the column-span
diagnostic, and the figure analyses (:mod:`gainbench.evaluation.analysis.stage_analyses`).
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

from tqdm.auto import tqdm

from gainbench.config.evaluation import scored_domains
from gainbench.evaluation.analysis.column_span import diagnose, snapshot_weights
from gainbench.evaluation.perplexity import strided_nll, validation_nll
from gainbench.placement import SINGLE_PROCESS, Placement


class Evaluator:
    """Rows measured on the model after a stage; ``stage`` 0 is the base model."""

    provenance: dict = {}

    def before_stage(self, model, stage: int) -> None:
        """Called before stage ``stage`` trains (or is replayed on resume)."""

    def __call__(self, model, stage: int) -> list[dict]:
        raise NotImplementedError

    def after_replay(self, model, stage: int) -> None:
        """Called on resume once finished stage ``stage`` is replayed: no rows, only state."""

    def base_identity(self) -> dict | None:
        """What decides this evaluator's stage-0 rows besides the base model's weights and the
        machine's numerics (gainbench.evaluation.base_rows adds those): plain JSON values,
        including the source of the modules that compute them (``sources``); None (the default)
        when they cannot be reused: side effects, state kept for later stages, or no rows."""
        return None


class Perplexity(Evaluator):
    """Pooled validation NLL, perplexity and bits per byte of every domain (DESIGN.md section 4):
    non-overlapping blocks, or a sliding window of ``context`` tokens every ``stride`` tokens.

    With ``per_document`` (the default), also one ``ppl_doc`` row per validation document: its
    NLL sum (``metric`` nll_sum, nats) and predicted tokens (``n``), named in the ``document``
    column, so intervals can resample documents (gainbench.results.intervals).

    ``cells`` (``eval.cells``): ``all`` scores every domain after every stage; ``matched`` only
    the domains the matched comparison reads (gainbench.config.evaluation.scored_domains).
    ``stage`` None (the figure analyses' grids) scores every domain."""

    def __init__(self, domains: list, batch_size: int, stride: int | None = None,
                 context: int | None = None, placement: Placement = SINGLE_PROCESS,
                 per_document: bool = True, cells: str = "all"):
        self.domains, self.batch_size = domains, batch_size
        self.stride, self.context = stride, context
        self.placement, self.per_document, self.cells = placement, per_document, cells

    def scored(self, stage: int | None) -> list:
        """The domains scored after stage ``stage``."""
        if stage is None:
            return list(self.domains)
        return [self.domains[j - 1] for j in scored_domains(self.cells, stage, len(self.domains))]

    def base_identity(self) -> dict:
        """Each domain's validation tokens, their documents and bytes (hashed), and the scoring
        settings. Stage 0 scores every domain whatever ``cells`` says, so it is not part of it."""
        return {"domains": [_validation_identity(d) for d in self.domains],
                "batch_size": self.batch_size, "stride": self.stride, "context": self.context,
                "per_document": self.per_document,
                "sources": _sources(*_PERPLEXITY_CODE)}

    def __call__(self, model, stage: int | None) -> list[dict]:
        rows = []
        # disable=None: a bar on a terminal, nothing in a log file
        for domain in tqdm(self.scored(stage), leave=False,
                           disable=None if self.placement.is_main else True,
                           desc=f"stage {stage} eval" if stage is not None else "analysis eval"):
            documents = (dict(doc_index=domain.val_doc_index, n_docs=len(domain.val_doc_ids))
                         if self.per_document else {})
            if self.stride:  # sliding window: every token scored once, with up to `context` before it
                if documents:
                    documents["doc_index"] = documents["doc_index"].flatten()
                result = strided_nll(model, domain.val_blocks.flatten(), domain.val_stream_bytes,
                                     context=self.context, stride=self.stride,
                                     batch_size=self.batch_size, placement=self.placement,
                                     **documents)
            else:
                result = validation_nll(model, domain.val_blocks, domain.val_bytes, self.batch_size,
                                        placement=self.placement, **documents)
            for metric, value in (("nll", result.nll), ("ppl", result.ppl),
                                  ("bpb", result.bits_per_byte)):
                rows.append(dict(eval_kind="ppl", eval_name=domain.name, metric=metric, value=value,
                                 n=result.n_tokens))
            if result.doc_nll is not None:
                rows += [dict(eval_kind="ppl_doc", eval_name=domain.name, metric="nll_sum",
                              value=float(total), n=int(count), document=doc_id)
                         for doc_id, total, count in zip(domain.val_doc_ids, result.doc_nll,
                                                         result.doc_tokens) if count]
        return rows


class LmEval(Evaluator):
    """lm-eval tasks on the in-memory model, at the stages ``settings.runs_at`` selects
    (gainbench.settings.LmEvalSettings). On rank 0 while the other ranks wait; on every rank
    when the weights are sharded, since each forward pass then needs them all."""

    def __init__(self, settings, tokenizer, seed: int, last_stage: int,
                 placement: Placement = SINGLE_PROCESS):
        self.settings, self.tokenizer, self.seed = settings, tokenizer, seed
        self.last_stage, self.placement = last_stage, placement
        self.provenance = {}

    def __call__(self, model, stage: int) -> list[dict]:
        if not (self.settings.runs_at(stage, self.last_stage)
                and self.placement.evaluates_whole_model(model)):
            return []
        from gainbench.evaluation.lm_eval_bridge import run_lm_eval

        lm = self.settings
        rows, versions = run_lm_eval(model, self.tokenizer, list(lm.tasks),
                                     num_fewshot=lm.num_fewshot, limit=lm.limit,
                                     batch_size=lm.batch_size, seed=self.seed,
                                     include_path=lm.include_path)
        self.provenance = {"lm_eval": versions}
        return [dict(eval_kind="lm_eval", **row) for row in rows]

    def base_identity(self) -> dict | None:
        """The tasks and their settings, the seed lm-eval is seeded with, the tokenizer, the task
        definitions (gainbench's own and ``include_path``'s files) and lm-eval's version; None
        when lm-eval does not run at stage 0 or the tokenizer cannot be fingerprinted."""
        from gainbench.data.token_cache import tokenizer_fingerprint
        from gainbench.evaluation.lm_eval_bridge import TASKS_DIR
        from gainbench.provenance import package_versions

        if not self.settings.runs_at(0, self.last_stage):
            return None
        tokenizer = tokenizer_fingerprint(self.tokenizer)
        if tokenizer is None:
            return None
        lm = self.settings
        versions = package_versions()
        return {"tasks": list(lm.tasks), "num_fewshot": lm.num_fewshot, "limit": lm.limit,
                "batch_size": lm.batch_size, "seed": self.seed, "tokenizer": tokenizer,
                "task_files": _folder_digest(TASKS_DIR),
                "include_path": lm.include_path and _folder_digest(lm.include_path),
                "versions": {k: versions[k] for k in ("lm_eval", "datasets")},
                "sources": _sources(*_LM_EVAL_CODE)}


class ColumnSpan(Evaluator):
    """How much of the cumulative update leaves the base weights' spans (DESIGN.md section 2),
    per matrix in ``settings.targets``, at the stages ``settings.runs_at`` selects
    (gainbench.settings.DiagnosticSettings).

    The base weights are copied to the CPU when the evaluator is built, before any stage runs
    (on sharded weights each rank keeps its shard); each matrix pair is then compared one at a
    time where the model is, the weight as the method computes with it
    (:meth:`gainbench.methods.Method.effective_weight`)."""

    def __init__(self, settings, model, method, last_stage: int,
                 placement: Placement = SINGLE_PROCESS):
        self.settings, self.method = settings, method
        self.last_stage, self.placement = last_stage, placement
        self.base_weights, self.layout = {}, {}
        if settings.stages != "none" and settings.targets:
            with placement.editing(model):  # the shards themselves, not a gathered copy
                weights, self.layout = snapshot_weights(model, list(settings.targets), clone=False)
                self.base_weights = {name: placement.offload(w) for name, w in weights.items()}

    def __call__(self, model, stage: int) -> list[dict]:
        if not (self.settings.runs_at(stage, self.last_stage)
                and self.placement.evaluates_whole_model(model)):
            return []
        device = next(model.parameters()).device
        rows = []
        with self.placement.editing(model):
            for name, base in self.base_weights.items():
                # on sharded weights every rank gathers each pair whole and rank 0 analyses it
                pair = (self.placement.whole(base),
                        self.placement.whole(self.method.effective_weight(model.get_submodule(name))))
                if self.placement.is_main:
                    rows += diagnose({name: pair[0]}, {name: pair[1]}, self.layout, device=device)
        return rows


def _validation_identity(domain) -> dict:
    """A domain's validation set as the perplexity rows see it: name, tokens, each token's
    document, the document ids and the byte counts (a hash of the tensors)."""
    digest = hashlib.sha256()
    for tensor in (domain.val_blocks, domain.val_doc_index):
        digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    digest.update("\x00".join(domain.val_doc_ids).encode("utf-8", errors="surrogatepass"))
    return {"name": domain.name, "validation": digest.hexdigest(), "bytes": domain.val_bytes,
            "stream_bytes": domain.val_stream_bytes}


def _sources(*modules: str) -> str:
    """A hash of the source of ``modules`` as this process loaded them (:data:`_LOADED`): an edit
    to the code that computes the rows never reuses rows the old code computed, and an edit made
    while a long process runs (a sweep in one process) does not label the rows its loaded code
    computes with the edited code's hash."""
    digest = hashlib.sha256()
    for name in sorted(modules):
        digest.update(name.encode() + b"\x00" + _LOADED[name])
    return digest.hexdigest()


def read_sources(modules) -> dict[str, bytes]:
    """Each module's source file, the module imported first (so the file read is the code run)."""
    return {name: Path(importlib.import_module(name).__file__).read_bytes() for name in modules}


def _folder_digest(folder) -> str:
    """A hash of every file's relative path and bytes under ``folder``."""
    folder, digest = Path(folder), hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(folder)).encode() + b"\x00" + path.read_bytes())
    return digest.hexdigest()


# read at import, beside the code this process runs (see _sources)
_PERPLEXITY_CODE = (__name__, "gainbench.evaluation.perplexity", "gainbench.placement",
                    "gainbench.distributed")
_LM_EVAL_CODE = (__name__, "gainbench.evaluation.lm_eval_bridge")
_LOADED = read_sources(sorted({*_PERPLEXITY_CODE, *_LM_EVAL_CODE}))

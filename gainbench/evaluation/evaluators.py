"""What is measured after each stage, behind one small interface the protocol loops over.

    for evaluator in evaluators:
        evaluator.before_stage(model, stage)      # before the stage changes the model
    ...train and absorb...
    for evaluator in evaluators:
        rows += evaluator(model, stage)           # tidy rows (eval_kind, eval_name, metric, value, n)

On resume each finished stage is replayed instead of trained; :meth:`Evaluator.after_replay`
then rebuilds whatever state a later stage needs (a snapshot of the weights), without rows.
Anything an evaluator learns about its own provenance (lm-eval's task versions) goes into
:attr:`Evaluator.provenance`, which the protocol merges into run.json.

The evaluators here: validation perplexity on every domain, lm-eval tasks, the column-span
diagnostic, and the figure analyses (:mod:`gainbench.evaluation.analysis.stage_analyses`).
"""

from __future__ import annotations

from tqdm.auto import tqdm

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


class Perplexity(Evaluator):
    """Pooled validation NLL, perplexity and bits per byte of every domain (DESIGN.md section 4):
    non-overlapping blocks, or a sliding window of ``context`` tokens every ``stride`` tokens.

    With ``per_document`` (the default), also one ``ppl_doc`` row per validation document: its
    NLL sum (``metric`` nll_sum, nats) and predicted tokens (``n``), named in the ``document``
    column, so intervals can resample documents (gainbench.results.intervals)."""

    def __init__(self, domains: list, batch_size: int, stride: int | None = None,
                 context: int | None = None, placement: Placement = SINGLE_PROCESS,
                 per_document: bool = True):
        self.domains, self.batch_size = domains, batch_size
        self.stride, self.context = stride, context
        self.placement, self.per_document = placement, per_document

    def __call__(self, model, stage: int | None) -> list[dict]:
        rows = []
        # disable=None: a bar on a terminal, nothing in a log file
        for domain in tqdm(self.domains, leave=False, disable=None if self.placement.is_main else True,
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

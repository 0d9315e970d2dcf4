"""``eval:``: what is measured after every stage (configs/eval/*.yaml mirror these defaults):
validation budgets and the per-document rules, which cells of the perplexity matrix are scored,
the reuse of the base model's rows, lm-eval tasks, the column-span diagnostic.
Part of the typed schema (gainbench.config.schema, whose docstring explains roles and run ids).
"""

from __future__ import annotations

from dataclasses import dataclass

from gainbench.config.fields import EXECUTION, PRESENTATION, check_fields, setting
from gainbench.errors import GainbenchError


@dataclass(frozen=True)
class LmEvalSettings:
    """``eval.lm_eval``: downstream tasks through lm-eval, at some stages."""

    tasks: tuple[str, ...] = setting(("gb_boolq_mini", "gb_sciq_mini"),
                                     doc="local offline tasks (gainbench/evaluation/tasks) or lm-eval names")
    num_fewshot: int = setting(0, min=0)
    limit: float | None = setting(None, positive=True, doc="examples per task (< 1: a fraction); null = all")
    batch_size: int = setting(8, min=1)
    stages: str | tuple[int, ...] = setting("first_last",
                                            doc="all | first_last | none | a list of stage numbers")
    include_path: str | None = setting(None, neutral=None, doc="a folder of your own task YAMLs")
    # The metric each task is reported by (summary, tables, figures); how results are shown,
    # so not in the run id. The convention and its sources: results/run_metrics.headline_metric.
    headline_metrics: dict[str, str] = setting(
        factory=lambda: {"hellaswag": "acc_norm", "arc_challenge": "acc_norm",
                         "openbookqa": "acc_norm", "arc_easy": "acc", "piqa": "acc",
                         "winogrande": "acc", "boolq": "acc", "sciq": "acc",
                         "gb_boolq_mini": "acc", "gb_sciq_mini": "acc", "gb_cloze_embedded": "acc"},
        role=PRESENTATION, doc="task -> metric shown; a task not listed: acc")

    def __post_init__(self):
        check_fields(self, "eval.lm_eval")
        if isinstance(self.stages, str) and self.stages not in ("all", "first_last", "none"):
            raise GainbenchError(f"eval.lm_eval.stages must be all, first_last, none or a list of "
                                 f"stage numbers, got {self.stages!r}; fix eval.lm_eval.stages")

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
    """``eval.diagnostics``: the column-span diagnostic (gainbench.evaluation.analysis.column_span)
    of the weights in ``targets``, cumulative against the base model, after the last stage,
    every stage, or never."""

    targets: tuple[str, ...] = setting(("block_linear",),
                                       doc="roles (attn_out, ffn_down), block_linear, or module suffixes")
    stages: str = setting("last", choices=("last", "all", "none"))

    def __post_init__(self):
        check_fields(self, "eval.diagnostics")

    def runs_at(self, stage: int, last_stage: int) -> bool:
        if stage == 0 or not self.targets or self.stages == "none":
            return False
        return self.stages == "all" or stage == last_stage


@dataclass(frozen=True)
class DedupSettings:
    """``eval.val_dedup``: the near-duplicate screen (gainbench/data/dedup.py). A training
    document holding ``max_containment`` or more of a validation document's ``shingle_words``-word
    runs is dropped before packing; run.json's domains.<name>.near_duplicates counts them."""

    shingle_words: int = setting(12, min=1, doc="words per shingle")
    max_containment: float | None = setting(0.15, positive=True, max=1,
                                            doc="share of a validation document; null = no screen")


CELLS = ("all", "matched")


def scored_domains(cells: str, stage: int, last_stage: int) -> range:
    """The domains (1-based, in sequence order) whose validation perplexity stage ``stage`` of a
    ``last_stage``-stage sequence scores under ``eval.cells`` (:attr:`EvalSettings.cells`)."""
    if cells == "all" or stage in (0, last_stage):
        return range(1, last_stage + 1)
    return range(stage, min(stage + 1, last_stage) + 1)   # the diagonal and the cell before the next


@dataclass(frozen=True)
class EvalSettings:
    """``eval:``: what is evaluated after every stage (configs/eval/default.yaml)."""

    val_tokens: int = setting(1024, doc="validation tokens per domain, the same at every stage")
    val_doc_tokens: int | None = setting(64, min=1, neutral=None,
                                         doc="the first N tokens of each validation document; null = all")
    # a check, not a measurement: a run that passes it computes the same numbers whatever it is
    val_min_documents: int = setting(16, min=1, role=EXECUTION,
                                     doc="a domain's validation tokens come from at least this many documents")
    val_dedup: DedupSettings = setting(factory=DedupSettings,
                                       neutral=DedupSettings(max_containment=None))
    batch_size: int = setting(8, min=1, doc="validation blocks per forward pass")
    stride: int | None = setting(None, min=1, neutral=None,
                                 doc="null: whole blocks; N: sliding window of seq_len, N new tokens each")
    # Which cells R[k][j] of the perplexity matrix are scored. ``matched``: what the comparison
    # at matched in-domain gain reads (gainbench.results.fronts, through run_metrics and
    # gainbench.metrics): the in-domain change, L[k][k] vs L[k-1][k], and the earlier-domain
    # change, L[T][j] vs L[0][j] and vs L[j][j]. So stage 0 and stage T score every domain, stage
    # k (1 <= k < T) its own domain k (the diagonal) and domain k+1 (the cell before the next
    # diagonal): 4T - 2 of T(T+1) cells, 30 of 72 at T=8. BWT, FWT and the final PPL read only
    # those cells too; forgetting (each domain's best loss over every earlier stage) and the full
    # matrix do not, and are reported missing, never computed from part of it
    # (gainbench.results.run_metrics.unscored_metrics). The rows differ, so it is in the run id.
    cells: str = setting("all", choices=CELLS, neutral="all",
                         doc="all | matched: only the cells the matched comparison reads "
                             "(stage 0 and T every domain, stage k domains k and k+1)")
    # How stage 0 is computed, not what: the rows are bitwise those of an evaluation
    # (gainbench.evaluation.base_rows), so not in the run id.
    reuse_base: bool = setting(True, role=EXECUTION,
                               doc="reuse the base model's stage-0 rows from <results_dir>/.base/ "
                                   "when a run with the same model, data, evaluation and "
                                   "numerics computed them (one process only)")
    lm_eval: LmEvalSettings = setting(factory=LmEvalSettings)
    diagnostics: DiagnosticSettings = setting(factory=DiagnosticSettings)

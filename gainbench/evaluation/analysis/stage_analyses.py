"""The paper's figure analyses, run inside the protocol when ``analysis=...`` asks for them.

* per-token losses of chosen domains at chosen stages (Figure 1), saved under
  ``<run>/per_token/`` and turned into loss-change distributions between consecutive saves;
* interpolation ``W0 + alpha (W1 - W0)`` across a stage (Figure 3);
* the combination grid of two stages' updates (Figure 4): additive ``W0 + a dW_A + b dW_B``, or
  for GAIN multiplicative ``diag(s_A^a s_B^b) W0``; the two stages must be consecutive.

An :class:`~gainbench.evaluation.evaluators.Evaluator`: the protocol calls :meth:`before_stage`
before a stage changes the model and the evaluator itself once the stage is absorbed; on resume
:meth:`after_replay` rebuilds, without rows, the snapshots a later stage needs. How two stages'
updates combine is the method's to say (``Method.update_composition``). Rows carry their grid
point in the ``alpha`` / ``a`` / ``b`` columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from gainbench.evaluation.analysis.combination import combine_grid, gain_grid, scales_from_stage_state, task_vector
from gainbench.evaluation.analysis.interpolation import changed_tensors, interpolate, snapshot
from gainbench.evaluation.analysis.per_token import load_per_token, loss_change_rows, per_token_losses, save_per_token
from gainbench.errors import GainbenchError
from gainbench.evaluation.evaluators import Evaluator


@dataclass
class StageAnalyses(Evaluator):
    settings: object         # gainbench.settings.AnalysisSettings
    run_dir: Path
    domains: list            # DomainData, in sequence order
    evaluate: callable       # model -> perplexity rows on every domain
    load_stage_state: callable  # stage -> the method's saved tensors
    composition: str = "additive"   # or "multiplicative": Method.update_composition
    batch_size: int = 8
    _snapshots: dict = field(default_factory=dict)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        known = {d.name for d in self.domains}
        unknown = [d for d in self.settings.per_token_domains if d not in known]
        if unknown:
            raise GainbenchError(f"analysis.per_token.domains {unknown} are not in the sequence "
                                 f"{sorted(known)}")

    def before_stage(self, model, stage: int) -> None:
        s = self.settings
        if stage in s.interpolation_stages or (s.combination_stages and stage == s.combination_stages[0]):
            self._snapshots[("before", stage)] = snapshot(model)

    def __call__(self, model, stage: int) -> list[dict]:
        return self._after_stage(model, stage, emit=True)

    def after_replay(self, model, stage: int) -> None:
        self._after_stage(model, stage, emit=False)

    def _after_stage(self, model, stage: int, emit: bool) -> list[dict]:
        s, rows = self.settings, []
        if stage in s.per_token_stages and emit:
            rows += self._per_token(model, stage)
        if stage in s.interpolation_stages and emit:
            rows += self._interpolation(model, self._snapshots[("before", stage)])
        if not (s.combination_stages and stage == s.combination_stages[0]):
            self._snapshots.pop(("before", stage), None)  # keep only what a later stage needs
        if s.combination_stages and stage == s.combination_stages[0]:
            self._snapshots[("after", stage)] = snapshot(model)
        if s.combination_stages and stage == s.combination_stages[1]:
            a_stage = s.combination_stages[0]
            base = self._snapshots.pop(("before", a_stage))
            after_a = self._snapshots.pop(("after", a_stage))
            if emit:
                rows += self._combination(model, base, after_a)
        return rows

    def _per_token(self, model, stage: int) -> list[dict]:
        rows, folder = [], self.run_dir / "per_token"
        earlier = [k for k in self.settings.per_token_stages if k < stage]
        for domain in self.domains:
            if domain.name not in self.settings.per_token_domains:
                continue
            losses = per_token_losses(model, domain.val_blocks, self.batch_size)
            save_per_token(folder / f"stage{stage}_{domain.name}.npy", losses)
            if earlier:
                previous = load_per_token(folder / f"stage{max(earlier)}_{domain.name}.npy")
                for row in loss_change_rows(previous, losses, domain.name):
                    rows.append({**row, "metric": f"dloss_{row['metric']}_vs_stage{max(earlier)}"})
        return rows

    def _interpolation(self, model, before: dict) -> list[dict]:
        names = changed_tensors(before, snapshot(model))
        after = snapshot(model, names)
        rows = interpolate(model, {n: before[n] for n in names}, after, self.settings.alphas,
                           self.evaluate)
        return [{**r, "eval_kind": "interpolation"} for r in rows]

    def _combination(self, model, base: dict, after_a: dict) -> list[dict]:
        a_stage, b_stage = self.settings.combination_stages
        grid = self.settings.combination_grid
        after_b_all = snapshot(model)
        names = sorted(set(changed_tensors(base, after_a)) | set(changed_tensors(after_a, after_b_all)))
        after_b = {n: after_b_all[n] for n in names}
        if self.composition == "multiplicative":  # scales: "a times A" is s_A ** a
            scales_a = scales_from_stage_state(self.load_stage_state(a_stage))
            scales_b = scales_from_stage_state(self.load_stage_state(b_stage))
            rows = gain_grid(model, {n: base[n] for n in names}, scales_a, scales_b, grid, grid,
                             self.evaluate)
        else:
            rows = combine_grid(model, {n: base[n] for n in names},
                                task_vector({n: base[n] for n in names}, {n: after_a[n] for n in names}),
                                task_vector({n: after_a[n] for n in names}, after_b), grid, grid,
                                self.evaluate)
        with torch.no_grad():  # the grid leaves the model at W0: put the trained weights back
            state = model.state_dict()
            for n, t in after_b.items():
                state[n].copy_(t)
        return [{**r, "eval_kind": "combination"} for r in rows]

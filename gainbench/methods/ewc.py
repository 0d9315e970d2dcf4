"""``ewc``: full fine-tuning with Elastic Weight Consolidation (Kirkpatrick et al. 2017).

Loss at stage k: ``LM loss + lam/2 * sum_i F_i (theta_i - theta*_i)^2``, where ``theta*`` are
the weights after stage k-1 and ``F`` is the sum of the diagonal Fishers of stages 1..k-1
("online" EWC: one anchor, accumulated Fisher). Each stage's Fisher is the empirical one,
squared gradients of the LM loss averaged over ``fisher_batches`` batches of that stage's
training data: batch-level gradients, a cheap and common approximation.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gainbench.errors import GainbenchError
from gainbench.files import StageTensors
from gainbench.methods.base import register
from gainbench.methods.full_ft import FullFineTuning
from gainbench.placement import SINGLE_PROCESS, Placement

FISHER_PREFIX = "ewc.fisher."


@register("ewc")
class EWC(FullFineTuning):
    def __init__(self, lam: float = 100.0, fisher_batches: int = 4):
        if not lam >= 0 or fisher_batches < 1:
            raise GainbenchError("method.options.lam must be >= 0 and fisher_batches >= 1, "
                                 f"got lam={lam}, fisher_batches={fisher_batches}")
        self.lam, self.fisher_batches = float(lam), int(fisher_batches)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def regularization(self, model: nn.Module) -> torch.Tensor | None:
        if not self.fisher or self.lam == 0:
            return None
        penalty = sum((self.fisher[n] * (p - self.anchor[n]).pow(2)).sum()
                      for n, p in model.named_parameters() if n in self.fisher)
        return 0.5 * self.lam * penalty

    def after_training(self, model: nn.Module, blocks: torch.Tensor, batch_size: int) -> None:
        """Add this stage's Fisher and move the anchor to the weights just trained."""
        params = dict(model.named_parameters())
        stage_fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        was_training = model.training
        model.eval()  # no dropout: the Fisher of the model as it will be evaluated
        batches = [blocks[i:i + batch_size] for i in range(0, len(blocks), batch_size)]
        batches = batches[: self.fisher_batches]
        device = next(model.parameters()).device
        for batch in batches:
            model.zero_grad(set_to_none=True)
            batch = batch.to(device)
            model(input_ids=batch, labels=batch).loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    stage_fisher[n] += p.grad.detach().pow(2) / len(batches)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        for n, f in stage_fisher.items():
            self.fisher[n] = self.fisher[n] + f if n in self.fisher else f
        self.anchor = {n: p.detach().clone() for n, p in params.items()}

    def stage_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        state = super().stage_state(model)
        state.update({FISHER_PREFIX + n: f.detach() for n, f in self.fisher.items()})
        return state

    def replay(self, model: nn.Module, state: dict[str, torch.Tensor],
               placement: Placement = SINGLE_PROCESS) -> nn.Module:
        # a view by name: the state's tensors are read one at a time (RunStore.load_stage_state)
        weights = StageTensors([n for n in state if not n.startswith(FISHER_PREFIX)],
                               state.__getitem__)
        model = super().replay(model, weights, placement)
        params = dict(model.named_parameters())
        # on the parameters' device, and sharded as they are (train.shard_weights)
        self.fisher = {n: placement.shaped_like(state[FISHER_PREFIX + n], params[n])
                       for n in (k[len(FISHER_PREFIX):] for k in state if k.startswith(FISHER_PREFIX))}
        self.anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
        return model

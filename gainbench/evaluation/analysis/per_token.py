"""Per-token loss change on a domain after one adaptation (the paper's Figure 1).

A pooled NLL (``gainbench.evaluation.perplexity``) says *how much* a domain got worse; the
distribution of the per-token change says *how*: a few tokens much worse, or every token a little.
Sign convention, as everywhere in gainbench: ``change = after - before`` in nats per token, so a
positive change is a token whose loss rose (forgetting), a negative one a token that improved.

    losses_0 = per_token_losses(model, blocks)            # before the stage
    ...train, absorb...
    losses_1 = per_token_losses(model, blocks)            # after, on the SAME blocks
    rows = loss_change_rows(losses_0, losses_1, "kjv_bible")
"""

from __future__ import annotations

import os

import numpy as np
import torch

from gainbench.evaluation.perplexity import token_nll
from gainbench.files import atomic_write

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@torch.inference_mode()
def per_token_losses(model, blocks: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """NLL (nats) of every predicted token: float32 ``[n_blocks, block_len - 1]`` on the CPU.

    Entry ``[i, t]`` is ``-log p(blocks[i, t+1] | blocks[i, :t+1])``: each block is scored on its
    own and its first token (no context) is not predicted, exactly as in ``validation_nll``, so
    ``losses.double().mean()`` equals its pooled ``nll``. The model's train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start:start + batch_size].to(device)
            out.append(token_nll(model, batch).cpu())  # the same scores validation_nll sums
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros(0, max(blocks.size(1) - 1, 0))
    return torch.cat(out)


def save_per_token(path: str | os.PathLike, losses: torch.Tensor) -> None:
    """Write ``losses`` as a float16 ``.npy`` (half the size of float32), atomically.

    float16 keeps ~3 significant digits (relative spacing 2^-10 ~ 1e-3, e.g. steps of 0.004 near a
    loss of 4 nats) and saturates at 65504 (an ``inf`` NLL stays ``inf``). The file is written to
    a temporary name in the same folder and renamed, so a reader never sees half a file.
    """
    array = losses.detach().cpu().to(torch.float16).numpy()

    def write(tmp):
        with open(tmp, "wb") as f:   # a file object: np.save would append ".npy" to a name
            np.save(f, array, allow_pickle=False)

    atomic_write(path, write)


def load_per_token(path: str | os.PathLike) -> torch.Tensor:
    """Read a file written by :func:`save_per_token`, as float32."""
    return torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))


def _quantile_name(q: float) -> str:
    # 0.01 -> "q01", 0.5 -> "q50", 0.999 -> "q99.9"
    return f"q{q * 100:02g}"


def loss_change_rows(before: torch.Tensor, after: torch.Tensor, name: str,
                     quantiles=QUANTILES) -> list[dict]:
    """Distribution of the per-token loss change ``d = after - before`` (nats), as result rows.

    ``before`` and ``after`` must be losses of the SAME tokens in the same order (same blocks,
    from :func:`per_token_losses`); only their shapes can be checked here. Rows::

        {"eval_kind": "per_token", "eval_name": name, "metric": m, "value": float, "n": n_tokens}

    with m = ``mean`` (mean of d; equals the change of the pooled NLL), ``std`` (population std
    of d, ddof=0), ``q01`` .. ``q99`` (quantiles of d, linear interpolation; names from
    ``quantiles``: 0.01 -> q01) and ``frac_worse`` (share of tokens with d > 0, i.e. whose loss
    rose; ties d == 0 count as not worse). Positive = worse, as everywhere.

    Resolution: losses stored with :func:`save_per_token` are float16, ~1e-3 relative (about
    0.004 nats at a loss of 4), so changes below that are rounded; a token whose loss did not
    change at all still gives exactly 0, and ``frac_worse`` counts only resolvable rises.
    """
    before, after = torch.as_tensor(before), torch.as_tensor(after)
    if before.shape != after.shape:
        raise ValueError(f"before {tuple(before.shape)} and after {tuple(after.shape)} must hold "
                         "the losses of the same tokens")
    d = (after.double() - before.double()).flatten().numpy()
    n = int(d.size)
    if n == 0:
        raise ValueError("no tokens: before/after are empty")
    values = {"mean": float(d.mean()), "std": float(d.std())}
    for q, v in zip(quantiles, np.quantile(d, list(quantiles))):
        values[_quantile_name(q)] = float(v)
    values["frac_worse"] = float((d > 0).mean())
    return [{"eval_kind": "per_token", "eval_name": name, "metric": m, "value": v, "n": n}
            for m, v in values.items()]

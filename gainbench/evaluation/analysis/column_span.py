r"""Does an update stay inside the pretrained weight's subspaces?  (DESIGN.md section 2, Proposition 1)

Convention: every measure works on ``W`` of shape ``[out, in]`` (``nn.Linear``), ``y = W x``.
GPT-2 ``Conv1D`` stores ``[in, out]``; pass ``layout="conv1d"`` and it is transposed first.

* ``col(W)`` = span of the columns, a subspace of R^out: the *output subspace*, every ``W x`` lies in it.
* ``row(W)`` = span of the rows, a subspace of R^in: the input directions the layer reads
  (``row(W)`` is the orthogonal complement of ``null(W)``).

What each update preserves (``D = diag(s)``, all ``s_i != 0``; ``Delta W = W' - W``)::

    output-side GAIN  W' = D W      row(W') = row(W)  exactly, for every W
                                    (Delta W = (D-I) W: its rows lie in row(W))
                                    col(W') = D col(W), which equals col(W) only if col(W) is invariant
                                    under D: W of full row rank (col(W) = R^out), s constant, or col(W)
                                    a sum of subspaces of D's eigenspaces (coordinate blocks of equal s_i).
                                    Outputs y' = s * (W x) lie in D col(W), in general NOT in col(W).
    input-side GAIN   W' = W D      col(W') = col(W)  exactly, for every W
                                    (Delta W = W (D-I): its columns lie in col(W))
                                    row(W') = D row(W): changes unless W has full column rank.
                                    Outputs y' = W (s * x) lie in col(W): the statement "multiplicative
                                    modulation only produces outputs inside the pretrained output
                                    subspace" is exact for the INPUT side.
    additive          W' = W + B A  col(Delta W) = col(B A) within col(B); column residual 0 iff col(BA) lies
                                    in col(W) (in particular if col(B) does), 1 if col(B) is orthogonal
                                    to col(W). Rows: the same with row(A).

More generally an update ``Delta W = M W`` (any M) has its rows in ``row(W)`` (row residual 0) and
``Delta W = W M`` its columns in ``col(W)`` (column residual 0); GAIN is the diagonal case, M = D - I.
So DESIGN's "a diagonal rescaling keeps the column span (for full-row-rank W)" is true but trivial: it is
true because then ``col(W) = R^out``, and then every update (LoRA, full FT) keeps it too. The same holds
for the row span when ``W`` has full column rank. Pretrained ``o_proj`` (square) is numerically full rank,
so both span residuals are ~0 for every method; ``down_proj`` ``[d, 4d]`` has ``col = R^d`` (column
residual trivially 0) and a ``d``-dimensional ``row`` in R^4d (row residual informative: output-side
GAIN gives exactly 0, input-side GAIN, LoRA and full FT need not).

Hence two measures that stay informative for full-rank matrices:

* :func:`span_residual` with ``rank=r`` below full rank: the energy of ``Delta W`` outside the *dominant*
  top-``r`` singular subspace of ``W`` (exact statements above then hold only approximately).
* :func:`intruder_dimensions` (Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of
  Equivalence"): top singular vectors of ``W'`` that resemble no singular vector of ``W``. A large
  update along a new direction creates one; a global rescale ``c W`` creates none. For output-side GAIN
  there is no exact guarantee (``D W`` can rotate singular vectors when ``s`` varies strongly); it is an
  empirical measurement.

What a residual is worth needs a baseline: an update whose directions are random (say Gaussian
entries) has an expected fraction ``(m - r) / m`` of its energy outside an r-dimensional column
subspace of R^m, and ``(n - r) / n`` outside an r-dimensional row subspace of R^n
(:func:`random_residual`). A method's residual near that value says nothing of spans; below it, the
update prefers W's subspace. The baseline is 0 where the span is the whole space (full-rank square
W: both; a wide ``[out < in]`` full-rank W: the column side; a tall one: the row side), so only the
other side of a non-square or rank-deficient W can tell methods apart.

Cost: exact ``torch.linalg.svd`` (float32, on the tensor's device) when ``min(shape) <= exact_max_dim``;
above it a seeded randomised ``torch.svd_lowrank`` of the top ``max_rank`` (or ``rank``) triplets,
``oversample`` extra columns, ``niter`` power iterations. The randomised path approximates the dominant
subspace: for a slowly decaying spectrum the top vectors can mix within near-degenerate clusters.
So with the defaults a 7B model's 4096-wide matrices are measured against their top-256 (dominant)
subspaces (``n`` = 256 in the rows), where the exact statements above hold only approximately, while
matrices up to 1024 wide (the embedded 576-wide SmolLM2) get the exact numerical-rank spans.
Biases are not measured (output-side GAIN scales them as ``b' = s * b``).
"""

from __future__ import annotations

import torch
from torch import Tensor

EXACT_MAX_DIM = 1024   # exact SVD up to this min(shape); randomised above
MAX_RANK = 256         # reference subspace size on the randomised path when rank=None
RTOL = 1e-5            # numerical rank: singular values > RTOL * sigma_max (float32 eps ~ 1.2e-7)
OVERSAMPLE, NITER, SEED = 16, 4, 0


def _out_in(w: Tensor, layout: str = "linear") -> Tensor:
    if layout not in ("linear", "conv1d"):
        raise ValueError(f"layout must be 'linear' ([out, in]) or 'conv1d' ([in, out]), got {layout!r}")
    w = w.detach()
    return (w.T if layout == "conv1d" else w).to(torch.float32)


def _top_svd(w: Tensor, q: int | None, exact_max_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(U [out, q], S [q], V [in, q])``, top-q singular triplets of float32 ``w`` (q=None: all, exact)."""
    m = min(w.shape)
    if q is None or m <= exact_max_dim or q + OVERSAMPLE >= m:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        q = m if q is None else min(q, m)
        return u[:, :q], s[:q], vh[:q].mT
    devices = [w.get_device()] if w.is_cuda else []
    with torch.random.fork_rng(devices=devices):   # deterministic, and leaves the caller's RNG alone
        torch.manual_seed(SEED)
        u, s, v = torch.svd_lowrank(w, q=q + OVERSAMPLE, niter=NITER)
    return u[:, :q], s[:q], v[:, :q]


def _reference(w0: Tensor, rank: int | None, exact_max_dim: int, max_rank: int, rtol: float):
    """Orthonormal bases ``(U0 [out, r], V0 [in, r])`` of W0's reference subspaces, and r.

    rank given: top-``rank`` singular vectors (capped at min(shape)). rank=None: the numerical rank
    (sigma_i > rtol * sigma_1) from an exact SVD if min(shape) <= exact_max_dim, else the randomised top
    ``max_rank`` (an approximation: a smaller subspace than the numerical one).
    """
    if rank is None and min(w0.shape) > exact_max_dim:
        rank = max_rank
    u, s, v = _top_svd(w0, rank, exact_max_dim)
    if rank is None:
        r = int((s > rtol * s[0]).sum()) if s.numel() and s[0] > 0 else 0
        u, v = u[:, :r], v[:, :r]
    return u, v, u.shape[1]


def _residual(dw: Tensor, basis: Tensor, side: str) -> float:
    """``||(I - Q Q^T) dW||_F^2 / ||dW||_F^2`` (column) or ``||dW (I - Q Q^T)||_F^2 / ||dW||_F^2`` (row)."""
    total = dw.square().sum()
    if total == 0:
        return 0.0  # no update: nothing lies outside
    if side == "column":
        rest = dw - basis @ (basis.T @ dw)
    elif side == "row":
        rest = dw - (dw @ basis) @ basis.T
    else:
        raise ValueError(f"side must be 'column' or 'row', got {side!r}")
    return float((rest.square().sum() / total).clamp(0.0, 1.0))


def _intruders(w1: Tensor, u0: Tensor, k: int, threshold: float, exact_max_dim: int) -> tuple[int, int]:
    k = min(k, *w1.shape)
    u1 = _top_svd(w1, k, exact_max_dim)[0]
    if u0.shape[1] == 0:
        return k, k
    best = (u1.T @ u0).abs().amax(dim=1)   # per top-k vector of W1: max |cos| over W0's reference vectors
    return int((best < threshold).sum()), k


def random_residual(dim: int, rank: int) -> float:
    r"""Expected :func:`span_residual` of a random-direction update: ``(dim - rank) / dim``.

    ``dim`` = m (out) for the column side, n (in) for the row side; ``rank`` = r, the dimension of
    W0's reference subspace. For ``dW`` with i.i.d. Gaussian entries (or any distribution whose
    columns, resp. rows, are rotation invariant, e.g. LoRA's ``B A`` with Gaussian B), each column
    projects onto the r-dimensional subspace with energy ``chi^2_r`` out of ``chi^2_m``, so the
    fraction outside is Beta((m - r) n / 2, r n / 2) distributed with mean exactly (m - r) / m.
    """
    if dim <= 0 or not 0 <= rank <= dim:
        raise ValueError(f"need 0 <= rank <= dim and dim > 0, got rank={rank}, dim={dim}")
    return (dim - rank) / dim


def span_residual(W0: Tensor, W1: Tensor, rank: int | None = None, side: str = "column", *,
                  layout: str = "linear", rtol: float = RTOL, exact_max_dim: int = EXACT_MAX_DIM,
                  max_rank: int = MAX_RANK) -> float:
    r"""Fraction of the update's energy outside W0's column (or row) subspace, in [0, 1].

    With ``dW = W1 - W0`` ([out, in]) and ``Q`` an orthonormal basis of the top-``r`` left (side="column",
    Q in R^{out x r}) or right (side="row", Q in R^{in x r}) singular vectors of ``W0``::

        column:  ||dW - Q Q^T dW||_F^2 / ||dW||_F^2      row:  ||dW - dW Q Q^T||_F^2 / ||dW||_F^2

    0: every column (row) of the update lies in the pretrained column (row) span; 1: entirely orthogonal
    to it. A zero update returns 0. ``rank=None``: r = numerical rank of W0 (sigma_i > rtol * sigma_1),
    exact SVD; if ``min(shape) > exact_max_dim``, r = ``max_rank`` from a randomised SVD instead. With
    r = full rank the answer is trivially 0 (the span is the whole space); pass ``rank`` to measure
    against the dominant subspace. Exact facts: input-side GAIN ``W0 diag(s)`` gives column residual 0,
    output-side GAIN ``diag(s) W0`` gives row residual 0 (see the module docstring).
    """
    w0, w1 = _out_in(W0, layout), _out_in(W1, layout)
    if w0.shape != w1.shape:
        raise ValueError(f"shape mismatch: {tuple(w0.shape)} vs {tuple(w1.shape)}")
    u0, v0, _ = _reference(w0, rank, exact_max_dim, max_rank, rtol)
    return _residual(w1 - w0, u0 if side == "column" else v0, side)


def intruder_dimensions(W0: Tensor, W1: Tensor, k: int = 16, threshold: float = 0.5, *,
                        layout: str = "linear", rtol: float = RTOL, exact_max_dim: int = EXACT_MAX_DIM,
                        max_rank: int = MAX_RANK) -> int:
    r"""Number of intruder dimensions among the top-``k`` left singular vectors of ``W1``.

    Following Shuttleworth et al. (2024): the j-th left singular vector ``u1_j`` of the fine-tuned matrix
    (j = 1..k, by decreasing singular value) is an intruder iff ``max_i |cos(u1_j, u0_i)| < threshold``,
    the max taken over ALL pretrained left singular vectors ``u0_i`` (|.|: singular vectors have arbitrary
    sign). Left = output-space directions (R^out) of the [out, in] matrix. Choices made here: k=16,
    threshold=0.5 by default (the paper sweeps the threshold; report the one used); "all" means those
    with sigma_i > rtol * sigma_1 (for rank-deficient W0 the null-space vectors are an arbitrary basis that
    would match any new direction; for real pretrained weights this drops nothing). Above
    ``exact_max_dim`` the reference is W0's top ``max_rank`` vectors from a randomised SVD: fewer
    reference vectors can only lower each max |cos|, so the count is then an upper bound.
    Caveat: for a complete basis of R^n some |cos| >= 1/sqrt(n), so on very small matrices no direction
    can be an intruder at threshold 0.5 (n <= 4); likewise inside degenerate singular-value clusters.
    """
    w0, w1 = _out_in(W0, layout), _out_in(W1, layout)
    if w0.shape != w1.shape:
        raise ValueError(f"shape mismatch: {tuple(w0.shape)} vs {tuple(w1.shape)}")
    u0 = _reference(w0, None, exact_max_dim, max_rank, rtol)[0]
    return _intruders(w1, u0, k, threshold, exact_max_dim)[0]


def diagnose(pretrained: dict[str, Tensor], updated: dict[str, Tensor],
             weight_layout: dict[str, str] | None = None, *, rank: int | None = None, k: int = 16,
             threshold: float = 0.5, rtol: float = RTOL, exact_max_dim: int = EXACT_MAX_DIM,
             max_rank: int = MAX_RANK, device: str | torch.device | None = None) -> list[dict]:
    """Per-module rows for the results store (DESIGN.md section 5), one SVD of each W0 and W1.

    For every name in ``pretrained`` (must also be in ``updated``; layout per name from
    ``weight_layout``, default "linear" = [out, in]; "conv1d" = [in, out] is transposed first)::

        {"eval_kind": "diagnostic", "eval_name": name, "metric": m, "value": float, "n": int}

    with m = ``span_residual_column`` / ``span_residual_row`` (see :func:`span_residual`; n = dimension r
    of W0's reference subspace), ``intruder_dims`` (see :func:`intruder_dimensions`; value = count, n = k
    used), ``update_rel_norm`` = ||W1 - W0||_F / ||W0||_F (n = r), to tell whether a residual belongs
    to a non-negligible update, and the random-direction baselines of the two residuals (see
    :func:`random_residual`): ``span_residual_column_random`` = (m - r) / m with n = m (rows of W,
    out) and ``span_residual_row_random`` = (n - r) / n with n = n (columns of W, in), which also
    record W's [out, in] shape. ``device``: where to compute (e.g. "cuda"); default: the tensor's own.
    """
    layout = weight_layout or {}
    rows = []
    for name, w0 in pretrained.items():
        if name not in updated:
            raise KeyError(f"module {name!r} is in `pretrained` but not in `updated`")
        w0 = _out_in(w0.to(device) if device else w0, layout.get(name, "linear"))
        w1 = _out_in(updated[name].to(device) if device else updated[name], layout.get(name, "linear"))
        if w0.shape != w1.shape:
            raise ValueError(f"{name}: shape mismatch {tuple(w0.shape)} vs {tuple(w1.shape)}")
        dw = w1 - w0
        u0, v0, r = _reference(w0, rank, exact_max_dim, max_rank, rtol)
        u0_all = u0 if rank is None else _reference(w0, None, exact_max_dim, max_rank, rtol)[0]
        n_intr, k_used = _intruders(w1, u0_all, k, threshold, exact_max_dim)
        rel = float(dw.norm() / w0.norm()) if w0.norm() > 0 else float(dw.norm())
        for metric, value, n in (("span_residual_column", _residual(dw, u0, "column"), r),
                                 ("span_residual_row", _residual(dw, v0, "row"), r),
                                 ("intruder_dims", float(n_intr), k_used),
                                 ("update_rel_norm", rel, r),
                                 ("span_residual_column_random", random_residual(w0.shape[0], r),
                                  w0.shape[0]),
                                 ("span_residual_row_random", random_residual(w0.shape[1], r),
                                  w0.shape[1])):
            rows.append({"eval_kind": "diagnostic", "eval_name": name, "metric": metric,
                         "value": value, "n": n})
    return rows


def snapshot_weights(model: torch.nn.Module, targets: list[str], *, clone: bool = True,
                     device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, str]]:
    """``({module_name: weight}, {module_name: "linear" | "conv1d"})`` for ``diagnose``.

    ``targets`` are roles or module suffixes as in ``gainbench.models.architectures.resolve_targets``.
    ``clone=True`` copies to ``device`` in the stored dtype (absorb / merge / the optimiser change weights
    in place, so a reference taken before a stage would follow them); ``clone=False`` returns the live
    (detached) tensors, fine for the ``updated`` side. Take it on the plain model (no wrapper attached):
    names then match after absorb/merge.
    """
    from transformers.pytorch_utils import Conv1D

    from gainbench.models.architectures import resolve_targets

    weights, layout = {}, {}
    for name, module in resolve_targets(model, list(targets)).items():
        w = module.weight.detach()
        weights[name] = w.to(device, copy=True) if clone else w
        layout[name] = "conv1d" if isinstance(module, Conv1D) else "linear"
    return weights, layout

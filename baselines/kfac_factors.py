"""Kronecker factors and the damped K-FAC solve (functional core of :mod:`baselines.kfac`).

For a layer with weight W (out x in) and, if present, bias b, write the gradient matrix
M = [dW, db] (out x (in+1)). The per-example gradient of a fully connected layer is
g_n a_n^T with a_n = [x_n; 1] and g_n = dL_n/ds_n, so its (empirical) Fisher, row-major
vectorised, is approximated by the Kronecker product (Martens & Grosse 2015)

    F ~= G (x) A,    A = E[a a^T]   ((in+1) x (in+1)),    G = E[g g^T]   (out x out).

For Conv2d (Grosse & Martens 2016, "KFC") a_{n,t} are the im2col patches (``F.unfold``, order
(channel, kh, kw) like ``W.view(out, -1)``) at the L output positions t and g_{n,t} the output
gradients there:

    A = 1/(B L) sum_{n,t} a_{n,t} a_{n,t}^T,    G = 1/B sum_{n,t} g_{n,t} g_{n,t}^T

(so that G (x) A equals KFC's Omega (x) Gamma). Fully connected layers are the case L = 1; inputs
with extra dimensions (B, ..., in) treat every row as a position. The loss is assumed to be the
*mean* over the batch (first) dimension, so the back-propagated gradient is dL_n/ds / B and we
rescale by B: G = B * sum_rows grad_out grad_out^T.

With eigendecompositions A = Q_A diag(d_A) Q_A^T, G = Q_G diag(d_G) Q_G^T, the damped solve
(G (x) A + lambda I)^{-1} vec(M) is, as a matrix,

    V = Q_G [ (Q_G^T M Q_A) / (d_G d_A^T + lambda) ] Q_A^T.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED = (nn.Linear, nn.Conv2d)

# Largest im2col block (elements) built at once; larger inputs are processed in batch chunks.
_UNFOLD_CHUNK_ELEMS = 1 << 24


def is_supported(module: nn.Module) -> bool:
    """Linear, or Conv2d with groups = 1, zero padding given as numbers, and a trainable weight."""
    if not isinstance(module, SUPPORTED) or not module.weight.requires_grad:
        return False
    if module.bias is not None and not module.bias.requires_grad:
        return False
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.padding_mode == "zeros" and not isinstance(module.padding, str)
    return True


def _augment(cov: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """[[cov, mean], [mean^T, 1]]: the second moment of [a; 1] from those of a."""
    n = cov.shape[0]
    out = cov.new_empty(n + 1, n + 1)
    out[:n, :n] = cov
    out[:n, n] = mean
    out[n, :n] = mean
    out[n, n] = 1.0
    return out


def linear_factor_a(x: torch.Tensor, has_bias: bool) -> torch.Tensor:
    """A = mean over rows of a a^T, a = [x; 1] (bias) or x; x of shape (B, ..., in)."""
    rows = x.reshape(-1, x.shape[-1])
    cov = rows.T @ rows / rows.shape[0]
    return _augment(cov, rows.mean(0)) if has_bias else cov


def _conv_positions(x: torch.Tensor, conv: nn.Conv2d) -> int:
    """Number L of output positions of ``conv`` on input ``x``."""
    out = 1
    for size, k, s, p, d in zip(
        x.shape[2:], conv.kernel_size, conv.stride, conv.padding, conv.dilation, strict=True
    ):
        out *= (size + 2 * p - d * (k - 1) - 1) // s + 1
    return out


def conv_factor_a(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A = 1/(B L) sum_{n,t} a a^T over the im2col patches a (with a trailing 1 for the bias).

    The patches are built in batch chunks of at most ``_UNFOLD_CHUNK_ELEMS`` elements.
    """
    batch = x.shape[0]
    kh, kw = conv.kernel_size
    dim = x.shape[1] * kh * kw
    chunk = max(1, _UNFOLD_CHUNK_ELEMS // max(1, dim * _conv_positions(x, conv)))
    cov = x.new_zeros(dim, dim)
    total = x.new_zeros(dim)
    for start in range(0, batch, chunk):
        cols = F.unfold(
            x[start : start + chunk], conv.kernel_size, dilation=conv.dilation, padding=conv.padding,
            stride=conv.stride,
        )  # (b, dim, L)
        patches = cols.transpose(1, 2).reshape(-1, dim)  # (b L, dim)
        cov.addmm_(patches.T, patches)
        total.add_(patches.sum(0))
    rows = batch * _conv_positions(x, conv)
    cov.div_(rows)
    return _augment(cov, total / rows) if conv.bias is not None else cov


def factor_g(grad_out: torch.Tensor, batch_size: int) -> torch.Tensor:
    """G = B * sum over rows (batch and positions) of g g^T, g = dL/ds of the mean loss.

    ``grad_out``: (B, out) or (B, ..., out) for Linear, (B, out, H, W) for Conv2d.
    """
    if grad_out.dim() == 4:  # conv: channels are dim 1
        g = grad_out.transpose(0, 1).reshape(grad_out.shape[1], -1)  # (out, B H W)
        return (g @ g.T) * batch_size
    g = grad_out.reshape(-1, grad_out.shape[-1])
    return (g.T @ g) * batch_size


def grad_matrix(module: nn.Module) -> torch.Tensor:
    """M = [dW.view(out, -1), db] of a supported layer (missing gradients count as zero)."""
    w = module.weight
    gw = w.grad if w.grad is not None else torch.zeros_like(w)
    mat = gw.reshape(gw.shape[0], -1)
    if module.bias is not None:
        gb = module.bias.grad if module.bias.grad is not None else torch.zeros_like(module.bias)
        mat = torch.cat([mat, gb.reshape(-1, 1)], dim=1)
    return mat


def split_matrix(module: nn.Module, mat: torch.Tensor) -> list[torch.Tensor]:
    """Inverse of :func:`grad_matrix`: [V_W shaped like W, V_b shaped like b]."""
    w = module.weight
    if module.bias is None:
        return [mat.reshape(w.shape)]
    return [mat[:, :-1].reshape(w.shape), mat[:, -1].reshape(module.bias.shape)]


def eigen(factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(d, Q) with factor = Q diag(d) Q^T; eigenvalues clamped at 0 (factors are PSD)."""
    d, q = torch.linalg.eigh(factor)
    return d.clamp_(min=0.0), q


def precondition(
    mat: torch.Tensor,
    q_a: torch.Tensor,
    d_a: torch.Tensor,
    q_g: torch.Tensor,
    d_g: torch.Tensor,
    damping: float,
) -> torch.Tensor:
    """V = Q_G [(Q_G^T M Q_A) / (d_G d_A^T + damping)] Q_A^T  =  (G (x) A + damping I)^{-1} M."""
    v = q_g.T @ mat @ q_a
    v = v / (torch.outer(d_g, d_a) + damping)
    return q_g @ v @ q_a.T

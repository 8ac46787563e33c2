"""K-FAC (Martens & Grosse 2015; convolutions as in Grosse & Martens 2016, "KFC").

For every supported layer (``nn.Linear``, ``nn.Conv2d`` with groups = 1) with gradient matrix
M = [dW, db] (:mod:`baselines.kfac_factors` states the factor definitions):

    every ``factor_update_freq`` steps:  A <- xi A + (1 - xi) A_batch,  G <- xi G + (1 - xi) G_batch
                                         (the first update takes the batch factors as they are)
    every ``inv_update_freq`` steps:     A = Q_A diag(d_A) Q_A^T,  G = Q_G diag(d_G) Q_G^T
    every step:                          V = Q_G [(Q_G^T M Q_A) / (d_G d_A^T + lambda)] Q_A^T

then the KL clip over all K-FAC layers

    nu = min(1, sqrt(kl_clip / (lr^2 * sum_layers <V, M>))),   grad <- nu * V

and the update is SGD with momentum and weight decay (``torch.optim.SGD``) on those gradients.
Parameters of other modules (BatchNorm, embeddings, ...) keep their plain gradient (SGD).

Activations and output gradients are recorded by module hooks that the optimizer registers on the
model at construction (as kfac-pytorch's preconditioner does): a forward hook (plus a tensor hook on
the output) records every forward in training mode with gradients enabled, on steps where a factor
update is due; otherwise the hooks return at once. So any driver gets K-FAC: ``loss.backward();
opt.step()``, ``opt.step(closure)`` (HF Trainer, Lightning) or the registry's ``step(closure)``. The
loss must be the mean over the batch (first) dimension; each hooked module is called once per forward,
and the last recorded forward before a step is the one its factors come from. Under float16 loss
scaling the recorded output gradients carry the scale, which the G factors must not: the registry
divides it out (``TrainingOptimizer.loss_scale``); a plain driver hands its scaler over
(``opt.preconditioner.grad_scaler = scaler``, as kfac-pytorch takes one). Without either, a factor
update in one process compares one layer's gradient implied by the recorded tensors with its
``.grad`` (unscaled by ``GradScaler.step``); a ratio of 8 or more can only be a loss scale, so the nearest power of two
is divided out, with a warning (HF Trainer and Lightning drive fp16 this way without telling). The
hooks stay on the model, and keep the optimizer alive, until ``opt.preconditioner.remove_hooks()``:
call it before building another K-FAC on the same model.

Distributed (torch.distributed initialised with world > 1, or a ``process_group``): factors are
averaged over the ranks and the eigendecompositions are assigned greedily over the ranks and
broadcast from their owner (:mod:`baselines.kfac_dist`). Gradients must already be averaged.

Defaults and sources:
  * factor_decay 0.95, kl_clip 0.001, factor_update_freq 10, inv_update_freq 100: kfac-pytorch's
    ``KFAC`` (gpauloski/kfac-pytorch v0.3: factor_decay=0.95, kl_clip=0.001, fac_update_freq=10,
    kfac_update_freq=100) and the mL-BFGS authors' train.py flags (--stat-decay 0.95, --kl-clip 0.001,
    --kfac-cov-update-freq 10, --kfac-update-freq 100).
  * damping 0.003: kfac-pytorch's CIFAR-10 ResNet example (examples/torch_cifar10_resnet.py);
    the package's class default and the authors' train.py flag use 0.001.
  * lr 0.1, momentum 0.9: the authors' train.py / run script (K-FAC is followed by their SGD);
    weight decay 0 (a workload setting).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import kfac_factors as kf
from .base import CountingClosure, TrainingOptimizer, trainable_parameters
from .config import check_int, check_nonneg, check_positive, check_unit_interval
from .contract import PicklableOptimizer, check_dense_gradients, check_parameters, lr_value
from .kfac_dist import FactorComm, assign_owners, resolve_group


@dataclass(frozen=True)
class KFACConfig:
    """``kfac``: factor_decay 0.95, kl_clip 0.001, factor/inverse update every 10/100 steps (kfac-pytorch,
    mL-BFGS train.py), damping 0.003 (kfac-pytorch CIFAR-10 example), lr 0.1, momentum 0.9."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    damping: float = 0.003
    factor_decay: float = 0.95
    kl_clip: float = 0.001
    factor_update_freq: int = 10
    inv_update_freq: int = 100
    process_group: Any = None

    def __post_init__(self) -> None:
        check_nonneg("lr", self.lr)
        check_unit_interval("momentum", self.momentum)
        check_nonneg("weight_decay", self.weight_decay)
        check_positive("damping", self.damping)
        check_unit_interval("factor_decay", self.factor_decay)
        check_positive("kl_clip", self.kl_clip)
        check_int("factor_update_freq", self.factor_update_freq)
        check_int("inv_update_freq", self.inv_update_freq)


class _Factors:
    """``factors[key]`` (key "A" or "G") as an entry of a state dict; ``packed`` entries hold an
    eigendecomposition (d, Q) as one ``(n + 1, n)`` tensor and read back as the pair. An entry reads
    as None until it is first set (its ``<name>_set`` counter is 0): the tensors may exist before,
    as zeros, so that a fresh optimizer's state already has its full structure."""

    def __init__(self, store: Callable[[], dict], prefix: str, packed: bool = False) -> None:
        self._store, self._prefix, self._packed = store, prefix, packed

    def __getitem__(self, key: str) -> Any:
        store = self._store()
        if not store.get(self._prefix + key + "_set", 0):
            return None
        value = store[self._prefix + key]
        return (value[0], value[1:]) if self._packed else value

    def __setitem__(self, key: str, value: Any) -> None:
        if self._packed:
            d, q = value
            value = torch.cat([d.reshape(1, -1), q])
        store = self._store()
        store[self._prefix + key] = value
        store[self._prefix + key + "_set"] = 1

    def allocate(self, key: str, n: int, dtype: torch.dtype, device: torch.device) -> None:
        """Zeros of the entry's shape, not yet set (kept if the entry exists)."""
        store = self._store()
        if self._prefix + key not in store:
            store[self._prefix + key] = torch.zeros(n + 1 if self._packed else n, n, dtype=dtype, device=device)
            store[self._prefix + key + "_set"] = 0


class _Layer:
    """Per-layer K-FAC state: recorded tensors (here), running factors and their eigendecompositions
    (in ``store()``, the optimizer state of the layer's weight, so they are saved with it)."""

    def __init__(self, module: nn.Module, store: Callable[[], dict]) -> None:
        self.module = module
        self.x: torch.Tensor | None = None
        self.gout: torch.Tensor | None = None
        self.factors = _Factors(store, "kfac_factor_")
        self.eig = _Factors(store, "kfac_eig_", packed=True)
        w = module.weight
        if isinstance(module, nn.Conv2d):
            a_dim = w.shape[1] * w.shape[2] * w.shape[3]
        else:
            a_dim = w.shape[1]
        self.dims = {"A": a_dim + (1 if module.bias is not None else 0), "G": w.shape[0]}


class KFACPreconditioner:
    """Replaces the gradients of the supported layers of ``model`` by K-FAC directions."""

    def __init__(
        self,
        model: nn.Module,
        damping: float = 0.003,
        factor_decay: float = 0.95,
        kl_clip: float = 0.001,
        factor_update_freq: int = 10,
        inv_update_freq: int = 100,
        process_group: Any = None,
        store: Callable[[nn.Module], dict] | None = None,
    ) -> None:
        """``store(module)``: the dict that keeps ``module``'s factors and the step counter (the first
        layer's); default: a dict per module held here."""
        self.damping = damping
        self.factor_decay = factor_decay
        self.kl_clip = kl_clip
        self.factor_update_freq = factor_update_freq
        self.inv_update_freq = inv_update_freq
        own: dict[int, dict] = {}
        store = store or (lambda m: own.setdefault(id(m), {}))
        self.layers = [_Layer(m, functools.partial(store, m)) for m in model.modules() if kf.is_supported(m)]
        self._counter = functools.partial(store, self.layers[0].module) if self.layers else (lambda: own)
        self.eigen_count = 0  # eigendecompositions computed by this rank
        # the recorded output gradients are of the loss times this (float16 loss scaling): divided out
        self.loss_scale = 1.0
        self.grad_scaler: Any = None  # a torch.amp.GradScaler whose scale the recorded gradients carry
        self._warned_scale = False
        self._handles = [
            layer.module.register_forward_hook(functools.partial(self._forward_hook, layer))
            for layer in self.layers
        ]
        resolved = resolve_group(process_group)
        self.comm = FactorComm(*resolved) if resolved is not None else None
        jobs = [(i, k) for i in range(len(self.layers)) for k in ("A", "G")]
        world = self.comm.world_size if self.comm is not None else 1
        owners = assign_owners([float(self.layers[i].dims[k]) ** 3 for i, k in jobs], world)
        self.owners: dict[tuple[int, str], int] = dict(zip(jobs, owners, strict=True))

    # ---- recording --------------------------------------------------------------------------------
    def _forward_hook(self, layer: _Layer, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        # evaluation (no_grad, eval mode) records nothing; training forwards record when an update is due
        if not (torch.is_grad_enabled() and module.training and self.factor_update_due):
            return
        layer.x = inputs[0].detach()
        if output.requires_grad:
            output.register_hook(functools.partial(self._grad_hook, layer))

    @staticmethod
    def _grad_hook(layer: _Layer, grad: torch.Tensor) -> None:
        layer.gout = grad.detach()

    @property
    def steps(self) -> int:
        """Steps taken (in the first layer's store, so it is saved with the factors)."""
        return self._counter().get("kfac_steps", 0)

    @steps.setter
    def steps(self, value: int) -> None:
        self._counter()["kfac_steps"] = value

    @property
    def factor_update_due(self) -> bool:
        return self.steps % self.factor_update_freq == 0

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # ---- the three updates ------------------------------------------------------------------------
    @torch.no_grad()
    def update_factors(self) -> None:
        """Running averages of A and G from the recorded batch (averaged over ranks if distributed)."""
        fresh: list[tuple[_Layer, str, torch.Tensor]] = []
        scale = 1.0
        for layer in self.layers:
            if layer.x is None or layer.gout is None:
                continue
            m = layer.module
            # under autocast the recorded tensors are bfloat16/float16: the factors are kept in the weight's dtype
            x, gout = layer.x.to(m.weight.dtype), layer.gout.to(m.weight.dtype)
            if not fresh:  # once per update: the scale the recorded output gradients carry
                scale = self._recorded_scale(m, x, gout)
            if scale != 1.0:
                gout = gout / scale
            if isinstance(m, nn.Conv2d):
                a = kf.conv_factor_a(x, m)
            else:
                a = kf.linear_factor_a(x, m.bias is not None)
            fresh.append((layer, "A", a))
            fresh.append((layer, "G", kf.factor_g(gout, x.shape[0])))
            layer.x = layer.gout = None
        if self.comm is not None:
            self.comm.allreduce_mean([t for _, _, t in fresh])
        if fresh:  # a batch whose factors over- or underflow to non-finite values is left out (one sync)
            finite = torch.stack([torch.isfinite(t).all() for _, _, t in fresh]).tolist()
            fresh = [f for f, ok in zip(fresh, finite, strict=True) if ok]
        xi = self.factor_decay
        for layer, key, new in fresh:
            old = layer.factors[key]
            if old is None:
                layer.factors[key] = new
            else:
                old.mul_(xi).add_(new, alpha=1.0 - xi)

    def _recorded_scale(self, m: nn.Module, x: torch.Tensor, gout: torch.Tensor) -> float:
        """The loss scale in the recorded output gradients: the registry's, the scaler's, or measured
        (see the module docstring)."""
        if self.loss_scale != 1.0:
            return self.loss_scale
        if self.grad_scaler is not None:
            return float(self.grad_scaler.get_scale())
        if self.comm is not None:  # .grad is the ranks' average, the recorded tensors this rank's: no measure
            return 1.0
        if isinstance(m, nn.Linear) and m.weight.grad is not None:
            implied = gout.reshape(-1, gout.shape[-1]).T @ x.reshape(-1, x.shape[-1])
            actual = m.weight.grad
        elif m.bias is not None and m.bias.grad is not None and gout.dim() == 4:
            implied, actual = gout.sum(dim=(0, 2, 3)), m.bias.grad
        else:
            return 1.0
        ratio = float((implied * implied).sum() / (implied * actual).sum())  # one sync per factor update
        if not math.isfinite(ratio) or ratio < 8.0:
            return 1.0
        scale = 2.0 ** round(math.log2(ratio))
        if not self._warned_scale:
            warnings.warn(f"kfac: the recorded output gradients are {scale:g} times the parameters' gradients: a "
                          "loss scale (GradScaler), divided out of the factors; set opt.preconditioner.grad_scaler "
                          "= scaler to give it exactly", stacklevel=3)
            self._warned_scale = True
        return scale

    @torch.no_grad()
    def update_eigen(self) -> None:
        """Eigendecompose every factor (each by its owner rank; then broadcast)."""
        packed: list[torch.Tensor] = []
        owners: list[int] = []
        targets: list[tuple[_Layer, str]] = []
        rank = self.comm.rank if self.comm is not None else 0
        for i, layer in enumerate(self.layers):
            for key in ("A", "G"):
                factor = layer.factors[key]
                if factor is None:
                    continue
                owner = self.owners[(i, key)]
                n = factor.shape[0]
                if owner == rank:
                    d, q = kf.eigen(factor)
                    self.eigen_count += 1
                    buf = torch.cat([d.reshape(1, n), q], dim=0)
                else:
                    buf = factor.new_empty(n + 1, n)
                packed.append(buf)
                owners.append(owner)
                targets.append((layer, key))
        if self.comm is not None:
            self.comm.broadcast_packed(packed, owners)
        for (layer, key), buf in zip(targets, packed, strict=True):
            layer.eig[key] = (buf[0], buf[1:])

    @torch.no_grad()
    def precondition(self, lr: float) -> None:
        """Overwrite the K-FAC layers' gradients with nu * V (KL-clipped), no host synchronisation."""
        results: list[tuple[_Layer, torch.Tensor, torch.Tensor]] = []
        for layer in self.layers:
            if layer.eig["A"] is None or layer.eig["G"] is None:
                continue
            m = layer.module
            if m.weight.grad is None or (m.bias is not None and m.bias.grad is None):
                continue  # frozen (or partly frozen) layer: nothing to precondition, nothing must move
            d_a, q_a = layer.eig["A"]
            d_g, q_g = layer.eig["G"]
            mat = kf.grad_matrix(layer.module)
            v = kf.precondition(mat, q_a, d_a, q_g, d_g, self.damping)
            results.append((layer, mat, v))
        if not results:
            return
        vg = torch.stack([(v * mat).sum() for _, mat, v in results]).sum()
        nu = torch.clamp(torch.sqrt(self.kl_clip / (vg.abs() * (lr * lr))), max=1.0)
        for layer, _, v in results:
            params = [layer.module.weight] + ([layer.module.bias] if layer.module.bias is not None else [])
            for p, part in zip(params, kf.split_matrix(layer.module, v), strict=True):
                torch.mul(part, nu, out=p.grad)

    def step(self, lr: float) -> None:
        """After the backward pass: factor / eigen updates when due, then precondition."""
        if self.factor_update_due:
            self.update_factors()
        if self.steps % self.inv_update_freq == 0:
            self.update_eigen()
        self.precondition(lr)
        self.steps += 1


class KFAC(PicklableOptimizer, torch.optim.SGD):
    """``torch.optim.SGD`` (momentum, weight decay) on K-FAC directions; the factors, their
    eigendecompositions and the step counter live in ``self.state`` (under each layer's weight), so
    ``state_dict``, the distributed-checkpoint helpers and dtype/device casts on load cover them.

    ``step()`` preconditions the gradients of the layers its hooks recorded and then takes the SGD step,
    however it is driven (see the module docstring). A layer whose weight has no gradient (frozen) is
    neither preconditioned nor moved. The state follows its parameters: after ``model.double()`` or a
    move, the next step casts the factors and buffers to their parameter's dtype and device.
    """

    def __init__(self, model: nn.Module, params: list[nn.Parameter], cfg: KFACConfig) -> None:
        super().__init__(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self._check_dtypes()
        self.preconditioner = KFACPreconditioner(
            model,
            damping=cfg.damping,
            factor_decay=cfg.factor_decay,
            kl_clip=cfg.kl_clip,
            factor_update_freq=cfg.factor_update_freq,
            inv_update_freq=cfg.inv_update_freq,
            process_group=cfg.process_group,
            store=self._store,
        )
        if not self.preconditioner.layers:
            raise ValueError("kfac: the model has no nn.Linear / nn.Conv2d layer to precondition")
        # the whole state now (zeros, marked unset), and an entry for every parameter: the checkpoint
        # helpers then need no zero-gradient step and find every key and every parameter
        index = {}
        for i, layer in enumerate(self.preconditioner.layers):
            w = layer.module.weight
            for key in ("A", "G"):
                layer.factors.allocate(key, layer.dims[key], w.dtype, w.device)
                layer.eig.allocate(key, layer.dims[key], w.dtype, w.device)
            index.update({id(p): i for p in layer.module.parameters(recurse=False)})
        self.preconditioner.steps = self.preconditioner.steps
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["kfac_layer"] = index.get(id(p), -1)
                if group["momentum"] != 0:  # as torch.optim.SGD would at its first step (0 * mu + d = d)
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """A group added later (e.g. a head unfrozen) trains with SGD on its gradients, or on K-FAC
        directions for the layers the preconditioner already tracks."""
        super().add_param_group(param_group)
        if hasattr(self, "preconditioner"):
            self._check_dtypes()
            for p in self.param_groups[-1]["params"]:
                self.state[p].setdefault("kfac_layer", -1)

    def _check_dtypes(self) -> None:
        params = [p for g in self.param_groups for p in g["params"]]
        check_parameters(params, "kfac")
        for i, p in enumerate(params):
            if p.dtype in (torch.float16, torch.bfloat16):
                raise ValueError(f"kfac: parameter {i} (shape {tuple(p.shape)}) is {p.dtype}; the factors' "
                                 "eigendecompositions need float32 or float64 parameters")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        marked = any("kfac_layer" in entry for entry in state_dict["state"].values())
        first = self.preconditioner.layers[0].module.weight
        if marked and "kfac_steps" not in self.state[first]:  # (checkpoints before the markers migrate later)
            raise ValueError(
                "kfac.load_state_dict: the K-FAC step counter (under the first layer's weight) is missing: that "
                "weight's entry was left out, e.g. frozen when loading through the distributed-checkpoint helpers, "
                "which skip parameters that do not require gradients; unfreeze before loading"
            )

    def _follow_parameters(self, params: list[torch.Tensor]) -> None:
        """Floating state in its parameter's dtype and device (it was created for the parameters as they
        were at construction, or at the last step): what ``load_state_dict`` does, for a live cast."""
        for p in params:
            entry = self.state.get(p)
            if not entry:
                continue
            for key, value in entry.items():
                if (isinstance(value, torch.Tensor) and value.is_floating_point()
                        and (value.dtype != p.dtype or value.device != p.device)):
                    if value.dtype != p.dtype:
                        self._check_dtypes()  # a cast to float16/bfloat16 is refused now, not at the next eigh
                    entry[key] = value.to(device=p.device, dtype=p.dtype)

    def _store(self, module: nn.Module) -> dict:
        return self.state[module.weight]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for g in self.param_groups for p in g["params"]]
        check_dense_gradients(params, "kfac")
        if all(p.grad is None for p in params):
            return loss
        self._follow_parameters(params)
        self.preconditioner.step(lr=lr_value(self.param_groups[0]["lr"]))
        super().step()
        return loss


class KFACTraining(TrainingOptimizer):
    """K-FAC with SGD (:class:`KFAC`); one gradient per step."""

    def __init__(self, model: nn.Module, cfg: KFACConfig) -> None:
        super().__init__("kfac", KFAC(model, trainable_parameters(model), cfg), 1.0, model)

    @property
    def preconditioner(self) -> KFACPreconditioner:
        return self.optimizer.preconditioner  # type: ignore[attr-defined]

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        # checkpoints written before the factors moved into the optimizer state kept them here
        old = state.get("kfac")
        if old is None:
            return
        pre = self.preconditioner
        if len(old["layers"]) != len(pre.layers):
            raise ValueError(f"K-FAC state has {len(old['layers'])} layers, this model {len(pre.layers)}")
        pre.steps = int(old["steps"])
        for layer, saved in zip(pre.layers, old["layers"], strict=True):
            for key in ("A", "G"):
                f, e = saved["factors"][key], saved["eig"][key]
                if f is not None:
                    layer.factors[key] = f.clone()
                if e is not None:
                    layer.eig[key] = (e[0].clone(), e[1:].clone())

    def _step(self, closure: CountingClosure) -> torch.Tensor:
        loss = closure(backward=True)
        self.preconditioner.loss_scale = self.loss_scale
        self.optimizer.step()
        return loss


def build_kfac(model: nn.Module, cfg: KFACConfig) -> TrainingOptimizer:
    return KFACTraining(model, cfg)

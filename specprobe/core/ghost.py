"""Squared norms ‖J_gᵀ z_g‖² per group of samples, without per-sample gradients ("ghost norms").

For a group g of samples (one sample, or the whole micro-batch) and a cotangent z on the
outputs, J_gᵀ z_g is the gradient the group's samples contribute. Its squared norm per
parameter tensor is what the Hutchinson estimators need, and it can be had from the
activations a_t entering each layer and the gradients δ_t leaving it at the group's tokens t,
without forming a parameter-sized gradient per group or per probe:

* Linear W (out × in): ‖Σ_t δ_t a_tᵀ‖² = Σ_{t,t'} (δ_t·δ_t')(a_t·a_t'), cost T²(in + out)
  per group; when T(in + out) > in·out the gradient δᵀa (out × in) is formed instead, one
  group at a time. Bias: ‖Σ_t δ_t‖². transformers' ``Conv1D`` (GPT-2) is a Linear with a
  transposed weight.
* Embedding E: Σ_{t,t'} [id_t = id_t'] (δ_t·δ_t'), as ‖Σ_u (Σ_{t: id_t = u} δ_t)‖² over the
  distinct ids u (padding_idx rows receive no gradient).
* Elementwise scales (LayerNorm, RMSNorm, any ``*Norm`` whose parameters act per feature):
  the group's gradient Σ_t δ_t ⊙ ∂y_t/∂w is a d-vector; it is formed. ∂y/∂w comes from a
  forward-mode product, and the module is first checked to be elementwise in w.
* A weight tied between an Embedding and a Linear head: the norm of the sum of both uses,
  the cross term ⟨G_E, G_H⟩ = Σ_u Σ_t' δ^H_t'[u] (a_t' · Σ_{t: id_t=u} δ^E_t) included.
* Everything else (other modules, a parameter used outside its module's call, a module
  called twice): a correct fallback, one backward pass per group w.r.t. those parameters.

Which parameter uses the hooks see is checked against the autograd graph itself: a
parameter whose graph edges are not all accounted for by supported module calls goes to
the fallback, so a model that reuses a weight in its own code cannot be measured wrongly.

The backward pass requests the gradients of the hooked modules' outputs (δ), never of the
parameters, so no weight gradient is computed: memory per probe is the size of those
outputs, like the activations a training step keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from specprobe.core.operator import batched_vjp

_CHUNK_ELEMENTS = 1 << 24
"""Largest temporary Gram block (elements) formed at once."""


class _Kind(Enum):
    LINEAR = "linear"
    CONV1D = "conv1d"
    EMBEDDING = "embedding"
    NORM = "norm"


@dataclass
class _Call:
    module: nn.Module
    kind: _Kind | None
    input: Tensor
    output: Tensor


@dataclass
class _Plan:
    """Which module call accounts for which parameter tensor, for one forward pass."""

    calls: list[_Call]
    fallback: list[int]  # indices into the parameter list
    tied: dict[int, tuple[int, int]]  # param -> (embedding call, linear call), indices into calls


def _kind(module: nn.Module) -> _Kind | None:
    forward = type(module).forward
    if isinstance(module, nn.Linear) and forward is nn.Linear.forward:
        return _Kind.LINEAR
    if (
        isinstance(module, nn.Embedding)
        and forward is nn.Embedding.forward
        and module.max_norm is None
        and not module.scale_grad_by_freq
    ):
        return _Kind.EMBEDDING
    name = type(module).__name__
    if name == "Conv1D" and type(module).__module__.startswith("transformers."):
        return _Kind.CONV1D
    params = list(module.parameters(recurse=False))
    if name.endswith("Norm") and params and all(p.dim() == 1 for p in params):
        return _Kind.NORM
    return None


class GhostNorms:
    """Forward hooks on the modules that own the selected parameters; per-group squared norms.

    Use as a context manager around the measurement; call :meth:`reset` before each
    forward pass and :meth:`norms` after it (any number of times on the same graph).
    """

    def __init__(self, model: nn.Module, params: Sequence[Tensor], acc: torch.dtype) -> None:
        self.params = list(params)
        self.acc = acc
        self.index = {id(p): i for i, p in enumerate(self.params)}
        self.owners: dict[int, list[nn.Module]] = {}  # param index -> modules owning it directly
        self.modules: dict[nn.Module, _Kind | None] = {}
        for module in model.modules():
            for p in module.parameters(recurse=False):
                if id(p) in self.index:
                    self.owners.setdefault(self.index[id(p)], []).append(module)
                    self.modules[module] = _kind(module)
        self.calls: list[_Call] = []
        self.samples = 0
        self._handles: list[Any] = []
        self._quiet = False
        self._elementwise: dict[nn.Module, bool] = {}
        self._planned: tuple[Tensor, _Plan] | None = None  # the plan of the current outputs

    def __enter__(self) -> GhostNorms:
        for module, kind in self.modules.items():
            if kind is not None:
                self._handles.append(module.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.reset()

    def reset(self, samples: int = 0) -> None:
        """Forget the module calls of the previous forward pass; ``samples`` is the batch
        size of the next one (for position embeddings shared by the whole batch)."""
        self.calls.clear()
        self._planned = None
        self.samples = samples

    def hooked_bytes(self) -> int:
        """Bytes of the hooked module outputs of the last forward pass: what one probe's
        requested gradients take."""
        return sum(c.output.numel() * c.output.element_size() for c in self.calls if c.kind is not None)

    def _hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if self._quiet:
            return None
        kind = self.modules[module]
        if kind is None or not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
            self.calls.append(_Call(module, None, torch.empty(0), torch.empty(0)))
            return None
        ids = args[0]
        if kind is _Kind.EMBEDDING and ids.dim() == 2 and ids.shape[0] == 1 and self.samples > 1:
            # Position ids shared by the batch (GPT-2's wpe): the (1, T, d) output is
            # broadcast onto the samples downstream, so its gradient would be the sum over
            # them. Expanded here (a view, same values), its gradient is per sample.
            ids = ids.expand(self.samples, -1)
            output = output.expand(self.samples, *output.shape[1:])
            self.calls.append(_Call(module, kind, ids, output))
            return output
        self.calls.append(_Call(module, kind, ids, output))
        return None

    # -- planning -------------------------------------------------------------------------

    def _plan(self, f: Tensor) -> _Plan:
        samples = f.shape[0]
        per_module: dict[nn.Module, list[int]] = {}
        for i, call in enumerate(self.calls):
            per_module.setdefault(call.module, []).append(i)
        edges = _graph_edges(f, self.params)
        fallback: list[int] = []
        tied: dict[int, tuple[int, int]] = {}
        for p in range(len(self.params)):
            owners = self.owners.get(p, [])
            calls = [i for m in owners for i in per_module.get(m, [])]
            if edges[p] == 0:
                continue  # the outputs do not depend on it: zero, nothing to compute
            ok = (
                bool(owners)
                and edges[p] == len(calls)
                and all(
                    self.calls[i].kind is not None and self._usable(self.calls[i], samples) for i in calls
                )
            )
            if ok and len(calls) == 2:
                kinds = {self.calls[i].kind: i for i in calls}
                if set(kinds) == {_Kind.EMBEDDING, _Kind.LINEAR} and all(
                    getattr(self.calls[i].module, "weight", None) is self.params[p] for i in calls
                ):
                    tied[p] = (kinds[_Kind.EMBEDDING], kinds[_Kind.LINEAR])
                else:
                    ok = False
            elif ok and len(calls) != 1:
                ok = False
            if not ok:
                fallback.append(p)
        fallback_set = set(fallback)
        used = [
            call
            for call in self.calls
            if call.kind is not None
            and call.output.requires_grad
            and any(
                id(q) in self.index and self.index[id(q)] not in fallback_set
                for q in call.module.parameters(recurse=False)
            )
        ]
        return _Plan(calls=used, fallback=fallback, tied=tied)

    def _usable(self, call: _Call, samples: int) -> bool:
        """Sample-major input and output, and (for norms) a checked elementwise dependence."""
        x, y = call.input, call.output
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != samples or y.shape[0] != samples:
            return False
        if call.kind is _Kind.NORM:
            if call.module not in self._elementwise:
                self._elementwise[call.module] = self._check_elementwise(call)
            return self._elementwise[call.module]
        return True

    def _check_elementwise(self, call: _Call) -> bool:
        """Whether each parameter of a norm module acts per feature of the last dimension."""
        width = call.output.shape[-1]
        names = dict(call.module.named_parameters(recurse=False))
        if any(p.numel() != width for p in names.values()):
            return False
        x = call.input.detach()[:1]
        for name in names:
            ones = self._scale_derivative(call.module, name, x, None)
            direction = torch.randn(width, dtype=x.dtype, device=x.device)
            along = self._scale_derivative(call.module, name, x, direction)
            if (
                ones is None
                or along is None
                or not torch.allclose(along, ones * direction, rtol=1e-3, atol=1e-5)
            ):
                return False
        return True

    def _scale_derivative(
        self, module: nn.Module, name: str, x: Tensor, direction: Tensor | None
    ) -> Tensor | None:
        """∂y/∂w · direction (all ones by default): a forward-mode product through the module."""
        params = dict(module.named_parameters(recurse=False))
        w = params[name].detach()
        tangent = torch.ones_like(w) if direction is None else direction.to(w.dtype)

        def run(value: Tensor) -> Tensor:
            out = torch.func.functional_call(
                module, {**{k: v.detach() for k, v in params.items()}, name: value}, (x,)
            )
            return out

        self._quiet = True
        try:
            with torch.no_grad():
                derivative: Tensor = torch.func.jvp(run, (w,), (tangent,))[1]
        except (RuntimeError, NotImplementedError):
            return None
        finally:
            self._quiet = False
        return derivative

    # -- the norms ------------------------------------------------------------------------

    def norms(self, f: Tensor, cotangents: Tensor, per_sample: bool) -> Tensor:
        """Σ over groups of ‖J_gᵀ z_g‖², per probe and parameter tensor: ``(k, len(params))``.

        ``cotangents`` is ``(k, *f.shape)``; groups are the samples (dim 0 of ``f``) when
        ``per_sample``, else the whole micro-batch (plain Hutchinson). Cost: one backward
        pass for the k cotangents, plus one per group for fallback parameters.
        """
        if self._planned is None or self._planned[0] is not f:
            # once per forward pass, not per probe block: it walks the whole autograd graph
            self._planned = (f, self._plan(f))
        plan = self._planned[1]
        k = cotangents.shape[0]
        samples = f.shape[0]
        groups = samples if per_sample else 1
        out = torch.zeros((k, len(self.params)), dtype=torch.float64)
        if plan.calls:
            outputs = [c.output for c in plan.calls]
            deltas = batched_vjp(f, outputs, cotangents)
            fallback_set = set(plan.fallback)
            by_call = {id(c): d for c, d in zip(plan.calls, deltas, strict=True)}
            embedding_sums: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
            for call in plan.calls:
                delta = by_call[id(call)]
                if delta is None:
                    continue
                for name, p in call.module.named_parameters(recurse=False):
                    index = self.index.get(id(p))
                    if index is None or index in fallback_set:
                        continue
                    value = self._param_norm(call, name, delta, groups, embedding_sums)
                    out[:, index] += value.sum(1).double().cpu()
            for index, (emb, head) in plan.tied.items():
                e_call, h_call = self.calls[emb], self.calls[head]
                e_delta, h_delta = by_call.get(id(e_call)), by_call.get(id(h_call))
                if e_delta is None or h_delta is None:
                    continue
                cross = self._tied_cross(e_call, h_call, e_delta, h_delta, groups, embedding_sums)
                out[:, index] += 2 * cross.sum(1).double().cpu()
        if plan.fallback:
            out[:, plan.fallback] += self._fallback(f, cotangents, plan.fallback, groups)
        return out

    def _group(self, t: Tensor, groups: int, lead: int = 0) -> Tensor:
        """Reshape (…lead dims, samples, …, d) to (…lead, groups, tokens, d)."""
        shape = t.shape
        return t.reshape(*shape[:lead], groups, -1, shape[-1])

    def _param_norm(
        self,
        call: _Call,
        name: str,
        delta: Tensor,
        groups: int,
        embedding_sums: dict[int, tuple[Tensor, Tensor, Tensor]],
    ) -> Tensor:
        """‖group gradient‖² of one parameter tensor of one call: ``(k, groups)``."""
        acc = self.acc
        d = self._group(delta.to(acc), groups, lead=1)  # (k, G, N, out)
        if call.kind is _Kind.NORM:
            scale = self._scale_derivative(call.module, name, call.input.detach(), None)
            if scale is None:  # it ran in the elementwise check; a failure now is a bug
                raise RuntimeError(f"forward-mode product through {type(call.module).__name__} failed")
            e = self._group(scale.to(acc), groups)  # (G, N, d)
            return (d * e).sum(2).square().sum(-1)
        if name == "bias":
            return d.sum(2).square().sum(-1)
        if call.kind is _Kind.EMBEDDING:
            sums, _, _ = self._embedding_sums(call, d, groups, embedding_sums)
            return sums
        a = self._group(call.input.detach().to(acc), groups)  # (G, N, in)
        return _linear_weight_norm(a, d)

    def _embedding_sums(
        self,
        call: _Call,
        d: Tensor,
        groups: int,
        cache: dict[int, tuple[Tensor, Tensor, Tensor]],
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per group: ‖Σ_u s_u‖², with s_u = Σ_{t: id_t = u} δ_t per distinct id u.

        Returns the norms ``(k, G)``, the sums ``(k, U, d)`` and each distinct key's
        (group, id) as a ``(U, 2)`` tensor.
        """
        if id(call) in cache:
            return cache[id(call)]
        module = call.module
        assert isinstance(module, nn.Embedding)
        ids = call.input.reshape(groups, -1)  # (G, N)
        vocab = module.num_embeddings
        keep = torch.ones_like(ids, dtype=torch.bool)
        if module.padding_idx is not None:
            keep = ids != module.padding_idx
        group_of = torch.arange(groups, device=ids.device).unsqueeze(1).expand_as(ids)
        keys = (group_of * vocab + ids)[keep]
        unique, inverse = torch.unique(keys, return_inverse=True)
        rows = d[:, keep]  # (k, M, dim) for the kept tokens, in (group, token) order
        sums = torch.zeros((d.shape[0], unique.numel(), d.shape[-1]), dtype=d.dtype, device=d.device)
        sums.index_add_(1, inverse, rows)
        norms = torch.zeros((d.shape[0], groups), dtype=d.dtype, device=d.device)
        norms.index_add_(1, unique // vocab, sums.square().sum(-1))
        result = (norms, sums, torch.stack([unique // vocab, unique % vocab], dim=1))
        cache[id(call)] = result
        return result

    def _tied_cross(
        self,
        e_call: _Call,
        h_call: _Call,
        e_delta: Tensor,
        h_delta: Tensor,
        groups: int,
        cache: dict[int, tuple[Tensor, Tensor, Tensor]],
    ) -> Tensor:
        """⟨G_E, G_H⟩ per group for a weight tied between an embedding and a linear head."""
        acc = self.acc
        d_e = self._group(e_delta.to(acc), groups, lead=1)
        _, sums, keys = self._embedding_sums(e_call, d_e, groups, cache)  # sums (k, U, dim)
        a = self._group(h_call.input.detach().to(acc), groups)  # (G, N', dim)
        d_h = self._group(h_delta.to(acc), groups, lead=1)  # (k, G, N', V)
        cross = torch.zeros((d_h.shape[0], groups), dtype=acc, device=d_h.device)
        for g in range(groups):
            members = (keys[:, 0] == g).nonzero().squeeze(1)
            if members.numel() == 0:
                continue
            ids = keys[members, 1]
            q = torch.einsum("nd,kud->knu", a[g], sums[:, members])  # a_t'·s_u
            picked = d_h[:, g][:, :, ids]  # δ^H_t'[u]: (k, N', U)
            cross[:, g] = (q * picked).sum((1, 2))
        return cross

    def _fallback(self, f: Tensor, cotangents: Tensor, indices: list[int], groups: int) -> Tensor:
        """Squared norms of the group gradients of ``indices``, one backward pass per group."""
        params = [self.params[i] for i in indices]
        k = cotangents.shape[0]
        out = torch.zeros((k, len(indices)), dtype=torch.float64)
        for g in range(groups):
            if groups == 1:
                z = cotangents
            else:
                z = torch.zeros_like(cotangents)
                z[:, g] = cotangents[:, g]
            grads = batched_vjp(f, params, z)
            for j, grad in enumerate(grads):
                if grad is not None:
                    out[:, j] += grad.reshape(k, -1).to(self.acc).square().sum(1).double().cpu()
        return out


def _linear_weight_norm(a: Tensor, d: Tensor) -> Tensor:
    """‖Σ_t δ_t a_tᵀ‖² per probe and group: ``a`` (G, N, in), ``d`` (k, G, N, out) → (k, G).

    Ghost form Σ_{t,t'} (δ_t·δ_t')(a_t·a_t') when N(in + out) ≤ in·out (short groups, wide
    layers: always for a language model head); otherwise the gradient δᵀa is formed one
    group at a time (out × in floats per probe).
    """
    k, groups = d.shape[:2]
    n, width_in, width_out = a.shape[1], a.shape[-1], d.shape[-1]
    out = torch.empty((k, groups), dtype=d.dtype, device=d.device)
    if n * (width_in + width_out) <= width_in * width_out:
        gram_a = a @ a.transpose(-1, -2)  # (G, N, N)
        step = max(1, _CHUNK_ELEMENTS // max(1, groups * n * n))  # probes per (k, G, N, N) block
        for lo in range(0, k, step):
            gram_d = d[lo : lo + step] @ d[lo : lo + step].transpose(-1, -2)
            out[lo : lo + step] = (gram_d * gram_a).sum((-1, -2))
        return out
    for g in range(groups):
        for j in range(k):
            grad = d[j, g].transpose(-1, -2) @ a[g]  # (out, in): one parameter-sized tensor at a time
            out[j, g] = grad.square().sum()
    return out


def _graph_edges(f: Tensor, params: Sequence[Tensor]) -> list[int]:
    """How many times the autograd graph of ``f`` uses each parameter (edges into its
    gradient accumulator); 0 for a parameter ``f`` does not depend on."""
    index = {id(p): i for i, p in enumerate(params)}
    counts = [0] * len(params)
    seen: set[Any] = set()
    stack = [f.grad_fn] if f.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is None:
                continue
            variable = getattr(child, "variable", None)
            if variable is not None:
                i = index.get(id(variable))
                if i is not None:
                    counts[i] += 1
                continue
            stack.append(child)
    return counts

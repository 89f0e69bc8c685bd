"""The hooks and the per-group squared norms: :class:`GhostNorms`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from specprobe.core.ghost.embedding import tied_cross
from specprobe.core.ghost.fallback import fallback_norms
from specprobe.core.ghost.plan import Plan, plan
from specprobe.core.ghost.registry import Call, Context, LayerRule, group, rule_for
from specprobe.core.gradients import backward_each
from specprobe.core.operator import batched_vjp


@dataclass
class GroupNorms:
    """What :meth:`GhostNorms.group_norms` returns, float64 on the CPU."""

    values: Tensor
    """‖J_gᵀ z_g‖² per probe, group and parameter tensor: ``(k, G, len(params))``."""
    inner: Tensor | None
    """⟨J_gᵀ z_g, direction⟩ per probe, group and parameter tensor, ``(k, G, len(params))``,
    when directions were given."""


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
        self.modules: dict[nn.Module, LayerRule | None] = {}
        for module in model.modules():
            for p in module.parameters(recurse=False):
                if id(p) in self.index:
                    self.owners.setdefault(self.index[id(p)], []).append(module)
                    self.modules[module] = rule_for(module)
        self.calls: list[Call] = []
        self.samples = 0
        self._handles: list[Any] = []
        self._quiet = False
        self._ctx = Context(acc, self._hooks_off)
        self._planned: tuple[Tensor, Plan] | None = None  # the plan of the current outputs

    def __enter__(self) -> GhostNorms:
        for module, rule in self.modules.items():
            if rule is not None:
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
        return sum(c.output.numel() * c.output.element_size() for c in self.calls if c.rule is not None)

    @contextmanager
    def _hooks_off(self) -> Iterator[None]:
        """The hooks record nothing inside (a rule calling its module itself)."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def _hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if self._quiet:
            return None
        rule = self.modules[module]
        if rule is None or not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
            self.calls.append(Call(module, None, torch.empty(0), torch.empty(0)))
            return None
        x, y, replacement = rule.capture(args[0], output, self.samples)
        self.calls.append(Call(module, rule, x, y))
        return replacement

    def _plan(self, f: Tensor) -> Plan:
        """The plan of this forward pass's outputs ``f`` (``specprobe.core.ghost.plan``)."""
        return plan(f, self.calls, self.params, self.owners, self._ctx)

    def norms(self, f: Tensor, cotangents: Tensor, per_sample: bool) -> Tensor:
        """Σ over groups of ‖J_gᵀ z_g‖², per probe and parameter tensor: ``(k, len(params))``.

        ``cotangents`` is ``(k, *f.shape)``; groups are the samples (dim 0 of ``f``) when
        ``per_sample``, else the whole micro-batch (plain Hutchinson). Cost: one backward
        pass for the k cotangents, plus one per group for fallback parameters.
        """
        return self.group_norms(f, cotangents, per_sample).values.sum(1)

    def _planned_for(self, f: Tensor) -> Plan:
        """The plan of the outputs ``f``: made once per forward pass, not per probe block (it
        walks the whole autograd graph)."""
        if self._planned is None or self._planned[0] is not f:
            self._planned = (f, self._plan(f))
        return self._planned[1]

    def group_norms(
        self,
        f: Tensor,
        cotangents: Tensor,
        per_sample: bool,
        directions: Sequence[Tensor] | None = None,
    ) -> GroupNorms:
        """:meth:`norms` kept per group: ``values`` ``(k, G, len(params))``; with
        ``directions`` (one tensor per parameter, e.g. the gradient), also ``inner``, the
        inner products ⟨J_gᵀ z_g, direction_p⟩, ``(k, G, len(params))``.

        The inner products cost about one more forward pass of the hooked layers (each
        rule's ``param_inner``: a product with the direction for Linear and Conv1D, a lookup
        for Embedding, the group's d-vector for known norms, a forward-mode product through
        other norm modules) and, for fallback parameters, nothing beyond the fallback's own
        per-group backward.
        """
        planned = self._planned_for(f)
        k = cotangents.shape[0]
        groups = f.shape[0] if per_sample else 1
        out = GroupNorms(
            torch.zeros((k, groups, len(self.params)), dtype=torch.float64),
            None if directions is None else torch.zeros((k, groups, len(self.params)), dtype=torch.float64),
        )
        if planned.calls:
            self._ghost(f, cotangents, planned, groups, out, directions)
        if planned.fallback:
            params = [self.params[i] for i in planned.fallback]
            chosen = None if directions is None else [directions[i] for i in planned.fallback]
            values, inner = fallback_norms(f, cotangents, params, groups, self.acc, chosen)
            out.values[:, :, planned.fallback] += values
            if out.inner is not None and inner is not None:
                out.inner[:, :, planned.fallback] += inner
        return out

    def _ghost(
        self,
        f: Tensor,
        cotangents: Tensor,
        planned: Plan,
        groups: int,
        out: GroupNorms,
        directions: Sequence[Tensor] | None,
    ) -> None:
        """Add the rules' norms (and inner products) of the planned calls to ``out``: one
        backward pass for the k cotangents, to the calls' outputs only."""
        self._ctx.scratch.clear()
        deltas = batched_vjp(f, [c.output for c in planned.calls], cotangents)
        fallback = set(planned.fallback)
        by_call = {id(c): d for c, d in zip(planned.calls, deltas, strict=True)}
        for call in planned.calls:
            delta = by_call[id(call)]
            if delta is None or call.rule is None:
                continue
            for name, p in call.module.named_parameters(recurse=False):
                index = self.index.get(id(p))
                if index is None or index in fallback:
                    continue
                d = group(delta.to(self.acc), groups, lead=1)  # (k, G, N, out)
                direction = None if directions is None else directions[index]
                self._add_use(out, index, call, name, d, groups, direction)
        for index in planned.tied:
            self._add_tie(out, index, planned, by_call, groups)
        self._ctx.scratch.clear()

    def _add_use(
        self,
        out: GroupNorms,
        index: int,
        call: Call,
        name: str,
        d: Tensor,
        groups: int,
        direction: Tensor | None,
    ) -> None:
        """Add one use of tensor ``index`` (the parameter ``name`` of ``call``) to ``out``: its
        rule's norms and, with ``direction``, inner products, from the call's output
        gradients ``d`` as ``(k, G, N, out)`` in the accumulation dtype. A tied weight's two
        uses each add their part (the inner product is linear; the norms' cross term is
        :meth:`_add_tie`'s)."""
        assert call.rule is not None
        out.values[:, :, index] += call.rule.param_norm(call, name, d, groups, self._ctx).double().cpu()
        if out.inner is not None and direction is not None:
            inner = call.rule.param_inner(call, name, direction, d, groups, self._ctx)
            out.inner[:, :, index] += inner.double().cpu()

    def _add_tie(
        self, out: GroupNorms, index: int, planned: Plan, deltas: Mapping[int, Tensor | None], groups: int
    ) -> None:
        """Add the cross term of tensor ``index``, a weight tied between an embedding and a
        head, to ``out``'s norms; ``deltas`` holds the calls' output gradients by call id
        (nothing is added where either is missing)."""
        table, head = planned.tied[index]
        e_call, h_call = self.calls[table], self.calls[head]
        e_delta, h_delta = deltas.get(id(e_call)), deltas.get(id(h_call))
        if e_delta is not None and h_delta is not None:
            cross = tied_cross(e_call, h_call, e_delta, h_delta, groups, self._ctx)
            out.values[:, :, index] += 2 * cross.double().cpu()

    def gradient_terms(
        self,
        f: Tensor,
        cotangent: Tensor,
        consume: Callable[[int, Tensor], None],
        direction: Callable[[int], Tensor] | None = None,
    ) -> GroupNorms:
        """One backward pass of ``cotangent`` (shaped like ``f``, e.g. the residual) that hands
        each parameter's gradient V_p = Σ_s v_s,p to ``consume(index, grad)`` as it is
        computed (as :func:`~specprobe.core.gradients.backward_each`, which it uses) and, from
        the same pass, per sample s the squared norm ‖v_s,p‖² and the inner product
        ⟨v_s,p, V_p⟩ of each tensor: ``values`` and ``inner`` ``(1, samples, len(params))``.

        The gradients δ of the hooked calls' outputs are caught as autograd computes them
        (before the weights' gradients, which need them); when V_p arrives, the rules turn
        δ and the calls' inputs into the tensor's terms, and V_p is freed: no P-float
        gradient is kept, only the calls' δ (one cotangent's worth, like a training step's
        activation gradients) until their tensors are done. Fallback parameters keep their
        own V_p for their per-sample backward passes after this one.

        A tensor that one hooked call alone uses has V_p = that call's batch gradient, so
        its rule's :meth:`~specprobe.core.ghost.registry.LayerRule.batch_inner` may give
        ⟨v_s,p, V_p⟩ from the call's δ and input alone (a Linear's Gram over the batch's
        tokens: T²(in + out) flops instead of a forward-sized product with V_p, and exact
        in the accumulation dtype even where V_p is a bfloat16 gradient).

        ``direction``: where V_p is more than this pass's gradient (the last of several
        micro-batches, V_p being their sum), ``direction(index)`` returns it, called after
        ``consume`` has added this pass's part; the inner products are then taken with it
        (a forward-sized product per Linear, no Gram form).
        """
        planned = self._planned_for(f)
        groups = f.shape[0]
        out = GroupNorms(
            torch.zeros((1, groups, len(self.params)), dtype=torch.float64),
            torch.zeros((1, groups, len(self.params)), dtype=torch.float64),
        )
        fallback = set(planned.fallback)
        uses: dict[int, list[tuple[Call, str]]] = {}  # tensor -> its (call, parameter name)s
        for call in planned.calls:
            for name, p in call.module.named_parameters(recurse=False):
                index = self.index.get(id(p))
                if index is not None and index not in fallback:
                    uses.setdefault(index, []).append((call, name))
        pending = Counter(id(call) for found in uses.values() for call, _ in found)  # tensors left per call
        deltas: dict[int, Tensor] = {}
        kept: dict[int, Tensor] = {}  # V_p of the fallback tensors

        def catch(call: Call) -> Callable[[Tensor], None]:
            def hook(grad: Tensor) -> None:
                deltas[id(call)] = grad.to(self.acc).unsqueeze(0)

            return hook

        def terms(index: int, grad: Tensor) -> None:
            consume(index, grad)
            target = grad if direction is None else direction(index)
            if index in fallback:
                kept[index] = target.to(self.acc)
                return
            found = uses.get(index, [])
            # V_p is this one call's gradient of this pass: the rule may use its Gram form
            alone = direction is None and len(found) == 1 and index not in planned.tied
            for call, name in found:
                delta = deltas.get(id(call))
                if delta is None or call.rule is None:  # the call's output does not reach f
                    continue
                d = group(delta, groups, lead=1)
                whole = call.rule.batch_inner(call, name, d, groups, self._ctx) if alone else None
                self._add_use(out, index, call, name, d, groups, target if whole is None else None)
                if whole is not None:
                    assert out.inner is not None
                    out.inner[:, :, index] += whole.double().cpu()
            if index in planned.tied:
                self._add_tie(out, index, planned, deltas, groups)
            for call, _ in uses.get(index, []):
                pending[id(call)] -= 1
                if pending[id(call)] == 0:
                    deltas.pop(id(call), None)  # its tensors are done

        self._ctx.scratch.clear()
        handles = [c.output.register_hook(catch(c)) for c in planned.calls]
        try:
            backward_each(f, cotangent, self.params, terms)
        finally:
            for handle in handles:
                handle.remove()
            self._ctx.scratch.clear()
        if planned.fallback:
            params = [self.params[i] for i in planned.fallback]
            directions = [kept[i] for i in planned.fallback]  # every fallback tensor is reached (plan)
            values, inner = fallback_norms(f, cotangent.unsqueeze(0), params, groups, self.acc, directions)
            out.values[:, :, planned.fallback] += values
            assert out.inner is not None and inner is not None
            out.inner[:, :, planned.fallback] += inner
        return out

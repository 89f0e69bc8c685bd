"""Which module call accounts for which parameter tensor, checked against the autograd graph.

Which parameter uses the hooks see is checked against the autograd graph itself: a
parameter whose graph edges are not all accounted for by usable calls of modules with a
rule goes to the fallback, so a model that reuses a weight in its own code cannot be
measured wrongly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from specprobe.core.ghost.registry import Call, Context, Tie


@dataclass
class Plan:
    """Which module call accounts for which parameter tensor, for one forward pass."""

    calls: list[Call]
    fallback: list[int]  # indices into the parameter list
    tied: dict[int, tuple[int, int]]  # param -> (table call, head call), indices into the recorded calls


def plan(
    f: Tensor,
    calls: list[Call],
    params: Sequence[Tensor],
    owners: dict[int, list[nn.Module]],
    ctx: Context,
) -> Plan:
    """Assign each parameter of ``params`` to its one usable call, to a tied pair of calls
    (table and head), or to the fallback; ``owners`` maps a parameter's index to the
    modules that own it directly. Walks the whole autograd graph of ``f`` once."""
    samples = f.shape[0]
    index = {id(p): i for i, p in enumerate(params)}
    per_module: dict[nn.Module, list[int]] = {}
    for i, call in enumerate(calls):
        per_module.setdefault(call.module, []).append(i)
    edges = _graph_edges(f, params)
    fallback: list[int] = []
    tied: dict[int, tuple[int, int]] = {}
    for p in range(len(params)):
        mine = [i for m in owners.get(p, []) for i in per_module.get(m, [])]
        if edges[p] == 0:
            continue  # the outputs do not depend on it: zero, nothing to compute
        ok = (
            bool(owners.get(p))
            and edges[p] == len(mine)
            and all(_usable(calls[i], samples, ctx) for i in mine)
        )
        if ok and len(mine) == 2:
            pair = _tied_pair(calls, mine, params[p])
            if pair is None:
                ok = False
            else:
                tied[p] = pair
        elif ok and len(mine) != 1:
            ok = False
        if not ok:
            fallback.append(p)
    fallback_set = set(fallback)
    used = [
        call
        for call in calls
        if call.rule is not None
        and call.output.requires_grad
        and any(
            id(q) in index and index[id(q)] not in fallback_set for q in call.module.parameters(recurse=False)
        )
    ]
    return Plan(calls=used, fallback=fallback, tied=tied)


def _usable(call: Call, samples: int, ctx: Context) -> bool:
    return call.rule is not None and call.rule.usable(call, samples, ctx)


def _tied_pair(calls: list[Call], pair: list[int], param: Tensor) -> tuple[int, int] | None:
    """(table call, head call) when two calls share ``param`` as an embedding table and a
    linear head, both as their ``weight``; else None."""
    roles = {_tie(calls[i]): i for i in pair}
    if set(roles) != {Tie.TABLE, Tie.HEAD}:
        return None
    if not all(getattr(calls[i].module, "weight", None) is param for i in pair):
        return None
    return roles[Tie.TABLE], roles[Tie.HEAD]


def _tie(call: Call) -> Tie | None:
    return None if call.rule is None else call.rule.tie


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

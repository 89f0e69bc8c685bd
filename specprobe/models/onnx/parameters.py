"""Whether an ONNX graph's parameters are the torch model's: the kernel is over θ, so a graph
whose exporter folded, merged or untied parameters measures another kernel.

Exporters store equal initialisers once (a fresh model's all-ones norm weights become one
tensor), fold constants into others (GPT-NeoX's two ``dense_4h_to_h`` biases away), and
store a tied embedding twice (as itself and transposed for the head). The function is the
same; the parameters, and so χ_net and χ_pos, are not. :func:`compare_parameters` compares
the graph's trainable initialisers with a torch model's parameters by their values (a
transposed copy counts as the same tensor); :func:`signature_parameters` reads the torch
parameter names the dynamo exporter records in the graph, for when no torch model is at hand.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor, nn

from specprobe.models.onnx.graph import signature_parameters

__all__ = ["ParameterComparison", "compare_parameters", "repeated_tensors", "signature_parameters"]


def _key(tensor: Tensor) -> str:
    """Equal for equal values in any order and shape (a transposed copy included)."""
    values = np.sort(tensor.detach().cpu().float().numpy().ravel())
    return hashlib.blake2b(values.tobytes(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class ParameterComparison:
    """The graph's trainable tensors against the torch model's parameters, by value."""

    graph_params: int
    """Trainable numbers in the graph (its float initialisers less literals and buffers)."""
    graph_tensors: int
    torch_params: int
    """Trainable numbers of the torch model (each tensor once, tied ones once)."""
    torch_tensors: int
    missing: tuple[str, ...]
    """Torch parameters whose values are in no graph tensor: folded into other constants,
    or merged with an equal one."""
    repeated: tuple[str, ...]
    """Torch parameters stored in the graph more than once (a tied weight untied)."""
    extra: int
    """Graph tensors that are no torch parameter (a folded sum, a merged copy)."""

    @property
    def same(self) -> bool:
        """Whether the graph's parameters are exactly the torch model's (the kernel is its)."""
        return (
            not self.missing
            and not self.repeated
            and not self.extra
            and self.graph_params == self.torch_params
        )

    def describe(self) -> str:
        """One line: the counts, and what differs."""
        head = (
            f"the graph has {self.graph_params:,} trainable parameters in {self.graph_tensors} tensors, the "
            f"torch model {self.torch_params:,} in {self.torch_tensors}"
        )
        if self.same:
            return head + ": the same parameters"
        parts = []
        if self.missing:
            shown = ", ".join(self.missing[:4]) + (
                f" and {len(self.missing) - 4} more" if len(self.missing) > 4 else ""
            )
            parts.append(f"{len(self.missing)} torch tensors not in the graph (folded or merged: {shown})")
        if self.repeated:
            parts.append(f"{', '.join(self.repeated)} stored more than once (untied)")
        if self.extra:
            parts.append(f"{self.extra} graph tensors that are no torch parameter")
        return head + ": " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph_params": self.graph_params,
            "graph_tensors": self.graph_tensors,
            "torch_params": self.torch_params,
            "torch_tensors": self.torch_tensors,
            "missing": list(self.missing),
            "repeated": list(self.repeated),
            "extra": self.extra,
            "same": self.same,
        }


def repeated_tensors(graph: nn.Module) -> int:
    """Graph tensors whose values repeat another's (in any order and shape): a tied weight
    the exporter stored twice (as itself and transposed for the head). Two parameters of a
    trained model never hold the same values; exporters store equal initialisers once, so
    a repeat is an untied tie. Cost: one sort of every tensor."""
    counts: dict[str, int] = {}
    for stored in graph.parameters():
        key = _key(stored)
        counts[key] = counts.get(key, 0) + 1
    return sum(count - 1 for count in counts.values())


def compare_parameters(graph: nn.Module, model: nn.Module) -> ParameterComparison:
    """Compare the converted graph's parameters with ``model``'s, by value.

    Cost: one sort of every tensor of both. A trained model's tensors are all distinct;
    a freshly initialised one has equal tensors (norm weights of ones, zero biases), which
    an exporter stores once: those show as ``missing`` here, rightly (the graph's kernel is
    not the module's)."""
    graph_tensors: list[Tensor] = list(graph.parameters())
    torch_named: dict[int, tuple[str, Tensor]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch_named.setdefault(id(param), (name, param))
    graph_keys: dict[str, int] = {}
    for stored in graph_tensors:
        key = _key(stored)
        graph_keys[key] = graph_keys.get(key, 0) + 1
    torch_keys: dict[str, list[str]] = {}
    for name, tensor in torch_named.values():
        torch_keys.setdefault(_key(tensor), []).append(name)
    missing: list[str] = []
    repeated: list[str] = []
    for key, names in torch_keys.items():
        found = graph_keys.get(key, 0)
        if found < len(names):
            missing.extend(names[found:])
        elif found > len(names):
            repeated.extend(names)
    extra = sum(count for key, count in graph_keys.items() if key not in torch_keys)
    return ParameterComparison(
        graph_params=sum(t.numel() for t in graph_tensors),
        graph_tensors=len(graph_tensors),
        torch_params=sum(p.numel() for _, p in torch_named.values()),
        torch_tensors=len(torch_named),
        missing=tuple(missing),
        repeated=tuple(repeated),
        extra=extra,
    )

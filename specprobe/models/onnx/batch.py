"""What ``specprobe.measure`` gets from an ONNX graph: the arrays of the inputs file, the batch
and its adapter, and the module to measure (a causal LM's graph wrapped as a Hugging Face
model)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from specprobe.core.adapters import Adapter, CallableAdapter, CausalLMAdapter, Loss
from specprobe.errors import SpecprobeError
from specprobe.models.onnx.graph import OnnxModule


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays from an ``.npz`` (numpy.savez) or ``.pt`` (torch.save of a dict of tensors) file.

    Keys: one per graph input, named as the graph names it (or ``inputs`` for a graph with
    one input), and ``targets``: integer class indices (classification, cross-entropy) or
    real values of the output's shape (regression, MSE).
    """
    path = Path(path)
    if not path.is_file():
        raise SpecprobeError(f"inputs file {path} does not exist", "give an .npz or .pt file")
    if path.suffix == ".npz":
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    if path.suffix == ".pt":
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(loaded, Mapping):
            raise SpecprobeError(
                f"expected {path} to hold a dict of tensors, found {type(loaded).__name__}",
                "torch.save({'inputs': x, 'targets': y}, path)",
            )
        return {str(k): torch.as_tensor(v).numpy() for k, v in loaded.items()}
    raise SpecprobeError(
        f"expected an .npz or .pt inputs file, found {path.suffix or path.name}",
        "save with numpy.savez(path, inputs=x, targets=y)",
    )


class GraphCausalLM(nn.Module):
    """An exported causal language model called as a Hugging Face one, for the causal-LM
    adapter: ``input_ids`` (and ``attention_mask``, when the graph takes it) in, the logits
    ``(N, S, V)`` out (the output named ``logits``, else the first)."""

    def __init__(self, graph: OnnxModule) -> None:
        super().__init__()
        self.graph = graph
        names = graph.output_names
        self.logits_index = names.index("logits") if "logits" in names else 0

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **_: Any) -> Tensor:
        feed = {"input_ids": input_ids}
        if "attention_mask" in self.graph.input_names:
            feed["attention_mask"] = (
                attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            )
        out = self.graph(**feed)
        return out[self.logits_index] if isinstance(out, tuple) else out


def is_causal_lm(module: OnnxModule, arrays: Mapping[str, np.ndarray]) -> bool:
    """A graph taking ``input_ids`` given without ``targets``: a causal LM, whose targets are
    its next tokens."""
    return "input_ids" in module.input_names and "targets" not in arrays


def onnx_batch(
    module: OnnxModule, inputs: dict[str, Tensor], arrays: Mapping[str, np.ndarray]
) -> tuple[Any, Adapter]:
    """The batch for ``specprobe.measure`` and its adapter: classification for integer
    targets (cross-entropy), regression for real ones (MSE); for a causal LM (``input_ids``
    without ``targets``) the causal-LM adapter on :class:`GraphCausalLM`, which the batch's
    model must then be (see :func:`measured_module`)."""
    if is_causal_lm(module, arrays):
        other = [n for n in module.input_names if n not in ("input_ids", "attention_mask")]
        if other:
            raise SpecprobeError(
                f"expected a causal-LM graph with inputs input_ids (and attention_mask), found also {other}",
                "export the model with input_ids and attention_mask as its only inputs",
            )
        batch: dict[str, Tensor] = {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
        if "labels" in arrays:
            batch["labels"] = torch.from_numpy(np.ascontiguousarray(arrays["labels"])).long()
        if inputs["input_ids"].ndim != 2:
            raise SpecprobeError(
                f"expected input_ids of shape (N, S), found {tuple(inputs['input_ids'].shape)}",
                "save token ids as a 2-d integer array",
            )
        return batch, CausalLMAdapter()
    if "targets" not in arrays:
        raise SpecprobeError(
            f"expected a 'targets' array beside the inputs, found keys {sorted(arrays)}",
            "add targets: class indices (classification) or real values (regression)",
        )
    targets = torch.from_numpy(np.ascontiguousarray(arrays["targets"]))
    loss = Loss.MSE if targets.is_floating_point() else Loss.CROSS_ENTROPY
    if loss is Loss.CROSS_ENTROPY:
        targets = targets.long()
    name = "regression" if loss is Loss.MSE else "classification"

    def run(model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        out = model(**batch["inputs"])
        return (out[0] if isinstance(out, tuple) else out), batch["targets"]

    return {"inputs": inputs, "targets": targets}, CallableAdapter(run, loss=loss, name=name)


def measured_module(graph: OnnxModule, arrays: Mapping[str, np.ndarray]) -> nn.Module:
    """The module ``specprobe.measure`` runs: :class:`GraphCausalLM` around a causal LM's
    graph, the graph itself otherwise."""
    return GraphCausalLM(graph) if is_causal_lm(graph, arrays) else graph

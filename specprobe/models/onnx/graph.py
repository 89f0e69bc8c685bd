"""An ONNX graph as a torch module (:class:`OnnxModule`), converted from a file and checked
against onnxruntime (:func:`load_onnx`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from specprobe.errors import SpecprobeError
from specprobe.models.onnx.ops import OPS, SUPPORTED_OPS, ints

INSTALL_HINT = 'install the ONNX extra: pip install "specprobe[onnx]"'


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


_SIGNATURE_KEY = "pkg.torch.export.ExportedProgram.graph_signature"


_BUFFER_LINE = re.compile(r"^\S+: (?:BUFFER|CONSTANT_TENSOR) target='([^']+)'", re.MULTILINE)


def exported_buffers(model: Any) -> set[str]:
    """Initializers that the exporter's own graph signature (torch.onnx.export with
    ``dynamo=True`` records it in the graph's metadata) names buffers or constant tensors,
    not parameters: they stay fixed, as in the torch module."""
    for prop in [*model.metadata_props, *model.graph.metadata_props]:
        if prop.key == _SIGNATURE_KEY:
            return set(_BUFFER_LINE.findall(prop.value))
    return set()


_PARAMETER_LINE = re.compile(r"^\S+: PARAMETER target='([^']+)'", re.MULTILINE)


def signature_parameters(model: Any) -> list[str] | None:
    """The torch parameter names the dynamo exporter's graph signature lists (None: the
    graph has no signature, as from the TorchScript exporter)."""
    for prop in [*model.metadata_props, *model.graph.metadata_props]:
        if prop.key == _SIGNATURE_KEY:
            return _PARAMETER_LINE.findall(prop.value)
    return None


class OnnxModule(nn.Module):
    """An ONNX graph run with torch operators; float initializers are its parameters.

    ``forward`` takes the graph's inputs positionally (in graph order) or by name and
    returns the first graph output (or a tuple of all outputs when there are several).
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        import onnx.numpy_helper

        graph = model.graph
        self.signature = signature_parameters(model)
        """The torch parameter names the exporter recorded (dynamo exporter), or None."""
        self.input_names = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
        self.output_names = [o.name for o in graph.output]
        self.nodes = [(n.op_type, list(n.input), list(n.output), _prepared(n)) for n in graph.node]
        unsupported = sorted({op for op, *_ in self.nodes if op not in OPS and op != "Constant"})
        if unsupported:
            raise SpecprobeError(
                f"the ONNX graph uses operator(s) {', '.join(unsupported)}, which specprobe cannot convert",
                f"supported operators: {', '.join(SUPPORTED_OPS)}; export the model with those, "
                "or measure the torch module directly with specprobe.measure",
            )
        self._names: dict[str, str] = {}  # ONNX tensor name -> attribute name
        params = nn.ParameterDict()
        buffers = exported_buffers(model)
        for i, init in enumerate(graph.initializer):
            array = onnx.numpy_helper.to_array(init).copy()
            key = f"p{i}"
            self._names[init.name] = key
            tensor = torch.from_numpy(array)
            # Parameters θ: the float initializers, less the literals and buffers an exporter
            # stores as initializers too (the dynamo exporter keeps 0.5, √(2/π), … as 0-d
            # initializers and a rotary embedding's inv_freq as a named buffer).
            if tensor.is_floating_point() and tensor.ndim > 0 and init.name not in buffers:
                params[key] = nn.Parameter(tensor)
            else:
                self.register_buffer(key, tensor)
        self.params = params
        for op, _, outputs, attrs in self.nodes:
            if op == "Constant":
                key = f"c{len(self._names)}"
                self._names[outputs[0]] = key
                self.register_buffer(key, torch.from_numpy(onnx.numpy_helper.to_array(attrs["value"]).copy()))
        self.names = {v: k for k, v in self._names.items()}

    def _lookup(self, key: str) -> Tensor:
        if key in self.params:
            return self.params[key]
        tensor: Tensor = getattr(self, key)
        return tensor

    def forward(self, *args: Tensor, **kwargs: Tensor) -> Tensor | tuple[Tensor, ...]:
        values: dict[str, Tensor] = {name: self._lookup(key) for name, key in self._names.items()}
        values.update(zip(self.input_names, args, strict=False))
        values.update(kwargs)
        missing = [n for n in self.input_names if n not in values]
        if missing:
            raise SpecprobeError(
                f"expected the graph inputs {self.input_names}, found no value for {missing}",
                "pass every graph input (see the keys of the inputs file)",
            )
        # Floating-point tensors the graph makes (Cast, ConstantOfShape) take the dtype of
        # its parameters, so that the module runs in float64 after .double() as in float32.
        floating = next((p.dtype for p in self.params.values()), torch.float32)
        for op, inputs, outputs, attrs in self.nodes:
            if op == "Constant":
                continue
            args_in = [values[n] if n else None for n in inputs]
            if op == "Cast":
                source = cast(Tensor, args_in[0])
                result: Any = source.to(floating if attrs["to"].is_floating_point else attrs["to"])
            elif op == "ConstantOfShape":
                value = attrs["value"]
                dtype = floating if value.is_floating_point() else value.dtype
                result = torch.full(ints(args_in[0]), value.item(), dtype=dtype)
            else:
                result = OPS[op](*args_in, **attrs)
            if isinstance(result, tuple):
                values.update(zip(outputs, result, strict=False))
            else:
                values[outputs[0]] = result
        outs = tuple(values[n] for n in self.output_names)
        return outs[0] if len(outs) == 1 else outs


def _prepared(node: Any) -> dict[str, Any]:
    """A node's attributes, with Cast's target type as a torch dtype and ConstantOfShape's
    value as a tensor (converted once, not at every call)."""
    import onnx.numpy_helper

    attrs = _attrs(node)
    if node.op_type == "Cast":
        numpy_type = onnx.helper.tensor_dtype_to_np_dtype(attrs["to"])
        attrs["to"] = torch.from_numpy(np.zeros(0, dtype=numpy_type)).dtype
    elif node.op_type == "ConstantOfShape":
        value = attrs.get("value")
        attrs["value"] = (
            torch.from_numpy(onnx.numpy_helper.to_array(value).copy()).reshape(())
            if value is not None
            else torch.tensor(0.0)
        )
    return attrs


@dataclass(frozen=True)
class OnnxCheck:
    """How well the converted module reproduces onnxruntime on the given inputs."""

    max_abs_error: float
    max_rel_error: float
    tolerance: float


def load_onnx(
    path: str | Path, arrays: Mapping[str, np.ndarray], tolerance: float = 1e-4
) -> tuple[OnnxModule, dict[str, Tensor], OnnxCheck]:
    """Convert ``path`` and check it against onnxruntime on ``arrays``' inputs.

    Returns the module, its inputs as tensors (by graph input name) and the check.
    Raises SpecprobeError when the file does not load, an operator is unsupported, the
    inputs do not match the graph, or the outputs differ by more than ``tolerance``
    (relative to the largest output magnitude).
    """
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise SpecprobeError("ONNX support needs the onnx and onnxruntime packages", INSTALL_HINT) from None
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:  # onnx raises several types (DecodeError, ValidationError, OSError)
        raise SpecprobeError(
            f"{path} is not a valid ONNX model ({type(err).__name__}: {str(err).splitlines()[0][:160]})",
            "export it again (torch.onnx.export) or check the file",
        ) from None
    module = OnnxModule(model)
    inputs = _graph_inputs(module, arrays, path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    try:
        expected = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    except Exception as err:  # onnxruntime reports shape/type mismatches as its own errors
        raise SpecprobeError(
            f"onnxruntime rejects the inputs: {str(err).splitlines()[0][:200]}",
            "check the shapes and dtypes of the arrays against the graph's inputs",
        ) from None
    with torch.no_grad():
        got = module(**inputs)
    got = got[0] if isinstance(got, tuple) else got
    diff = float(np.max(np.abs(got.numpy() - expected))) if expected.size else 0.0
    scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    check = OnnxCheck(max_abs_error=diff, max_rel_error=diff / max(scale, 1e-30), tolerance=tolerance)
    if not check.max_rel_error <= tolerance:
        raise SpecprobeError(
            f"the converted module differs from onnxruntime by {check.max_rel_error:.2e} (relative), "
            f"above the tolerance {tolerance:g}",
            "the graph uses an operator variant the converter does not reproduce; please report it",
        )
    return module, inputs, check


def _graph_inputs(
    module: OnnxModule, arrays: Mapping[str, np.ndarray], path: str | Path
) -> dict[str, Tensor]:
    names = module.input_names
    available = {k: v for k, v in arrays.items() if k != "targets"}
    if len(names) == 1 and names[0] not in available and "inputs" in available:
        available = {names[0]: available["inputs"]}
    missing = [n for n in names if n not in available]
    if missing:
        raise SpecprobeError(
            f"{path} expects inputs {names}; the inputs file has {sorted(arrays)}, missing {missing}",
            "name each array after the graph input (or 'inputs' for a single input), plus 'targets'",
        )
    return {n: torch.from_numpy(np.ascontiguousarray(available[n])) for n in names}

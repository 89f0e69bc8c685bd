"""ONNX graphs as torch modules, checked against onnxruntime, then measured.

An ONNX file holds a graph of operators and its weights (initializers). :class:`OnnxModule`
runs that graph with torch operators, the floating-point initializers as trainable
``nn.Parameter``s, so autograd (and therefore ``specprobe.measure``) sees the same
function of the same parameters. :func:`load_onnx` converts a file and checks the
converted module against onnxruntime on the user's inputs, reporting the largest
deviation; a mismatch or an operator outside :data:`SUPPORTED_OPS` is a clear error.

Why not onnx2torch: it imports torchvision at import time (for two detection operators),
and torchvision's wheels are tied to one torch build; an extra of ours should not pull a
second torch. The converter here covers the operators of MLPs, CNNs and exported
transformer language models (GPT-2, Llama, GPT-NeoX from either torch.onnx exporter); it
is tested against onnxruntime. A graph with an ``input_ids`` input and no ``targets`` is
measured as a causal LM (:class:`GraphCausalLM` with the causal-LM adapter).

Inputs and targets come from an ``.npz`` or ``.pt`` file (see :func:`load_arrays`).
Requires the ``onnx`` extra: ``pip install "specprobe[onnx]"`` (onnx, onnxruntime).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from specprobe.core.adapters import Adapter, CallableAdapter, CausalLMAdapter, Loss
from specprobe.errors import SpecprobeError

INSTALL_HINT = 'install the ONNX extra: pip install "specprobe[onnx]"'


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pads(pads: list[int] | None, dims: int) -> list[int]:
    """ONNX pads (begin_1, …, begin_n, end_1, …, end_n) to F.pad order (last dim first)."""
    if not pads:
        return [0] * (2 * dims)
    out: list[int] = []
    for i in reversed(range(dims)):
        out += [pads[i], pads[i + dims]]
    return out


def _conv(x: Tensor, w: Tensor, b: Tensor | None = None, **a: Any) -> Tensor:
    dims = w.ndim - 2
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise SpecprobeError(
            f"Conv with auto_pad={a['auto_pad']!r} is not supported", "export with explicit pads"
        )
    x = F.pad(x, _pads(a.get("pads"), dims))
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    return conv(x, w, b, stride=a.get("strides", 1), dilation=a.get("dilations", 1), groups=a.get("group", 1))


def _pool(kind: str) -> Callable[..., Tensor]:
    def pool(x: Tensor, **a: Any) -> Tensor:
        dims = x.ndim - 2
        pads = a.get("pads")
        kernel, stride = a["kernel_shape"], a.get("strides", 1)
        if kind == "max":
            x = F.pad(x, _pads(pads, dims), value=-math.inf)
            fn: Callable[..., Tensor] = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dims]
            return fn(x, kernel, stride, ceil_mode=bool(a.get("ceil_mode", 0)))
        x = F.pad(x, _pads(pads, dims))
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
        return fn(x, kernel, stride, ceil_mode=bool(a.get("ceil_mode", 0)))

    return pool


def _gemm(a: Tensor, b: Tensor, c: Tensor | None = None, **at: Any) -> Tensor:
    a = a.T if at.get("transA", 0) else a
    b = b.T if at.get("transB", 0) else b
    out = at.get("alpha", 1.0) * (a @ b)
    return out + at.get("beta", 1.0) * c if c is not None else out


def _batchnorm(x: Tensor, scale: Tensor, bias: Tensor, mean: Tensor, var: Tensor, **a: Any) -> Tensor:
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=a.get("epsilon", 1e-5))


def _reshape(x: Tensor, shape: Tensor, **a: Any) -> Tensor:
    target = [int(s) for s in shape.tolist()]
    target = [x.shape[i] if s == 0 and not a.get("allowzero", 0) else s for i, s in enumerate(target)]
    return x.reshape(target)


def _flatten(x: Tensor, **a: Any) -> Tensor:
    axis = a.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis  # in [0, ndim]: ndim gives (prod(shape), 1)
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _axes(a: Mapping[str, Any], second: Tensor | None) -> list[int] | None:
    if second is not None:
        return [int(v) for v in second.tolist()]
    axes = a.get("axes")
    return list(axes) if axes is not None else None


def _unsqueeze(x: Tensor, axes: Tensor | None = None, **a: Any) -> Tensor:
    chosen = _axes(a, axes) or []
    rank = x.ndim + len(chosen)  # axes count in the output's dimensions
    for axis in sorted(ax % rank for ax in chosen):
        x = x.unsqueeze(axis)
    return x


def _squeeze(x: Tensor, axes: Tensor | None = None, **a: Any) -> Tensor:
    chosen = _axes(a, axes)
    return x.squeeze() if chosen is None else x.squeeze(tuple(ax % x.ndim for ax in chosen))


def _reduce_mean(x: Tensor, axes: Tensor | None = None, **a: Any) -> Tensor:
    chosen = _axes(a, axes)
    keep = bool(a.get("keepdims", 1))
    return x.mean() if chosen is None else x.mean(dim=tuple(chosen), keepdim=keep)


def _softmax(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    return lambda x, **a: fn(x, dim=a.get("axis", -1))


# ---- shapes, indices, masks: the operators of exported language models -----------------------

INT64_MAX = 2**63 - 1


def _ints(t: Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _shape(x: Tensor, **a: Any) -> Tensor:
    dims = list(x.shape)
    start, end = a.get("start", 0), a.get("end", len(dims))
    return torch.tensor(dims[start:end], dtype=torch.int64)


def _gather(data: Tensor, indices: Tensor, **a: Any) -> Tensor:
    """ONNX Gather: out[i…, j…, k…] = data[i…, indices[j…], k…] along ``axis`` (an embedding
    lookup when data is a weight matrix; differentiable in data)."""
    axis = a.get("axis", 0) % data.ndim
    size = data.shape[axis]
    flat = torch.remainder(indices.reshape(-1).long(), size)  # negative indices count from the end
    picked = data.index_select(axis, flat)
    return picked.reshape((*data.shape[:axis], *indices.shape, *data.shape[axis + 1 :]))


def _gather_nd(data: Tensor, indices: Tensor, **a: Any) -> Tensor:
    """ONNX GatherND with batch_dims = 0: out[i…] = data[indices[i…, 0], …, indices[i…, k-1]]."""
    if a.get("batch_dims", 0):
        raise SpecprobeError(
            f"GatherND with batch_dims={a['batch_dims']} is not supported (only 0)",
            "export the model with plain indexing",
        )
    k = indices.shape[-1]
    index = indices.long()
    sizes = torch.tensor(data.shape[:k], dtype=torch.long)
    index = torch.remainder(index, sizes)  # negative indices count from the end
    return data[tuple(index[..., i] for i in range(k))]


def _slice(
    data: Tensor,
    starts: Tensor,
    ends: Tensor,
    axes: Tensor | None = None,
    steps: Tensor | None = None,
    **_: Any,
) -> Tensor:
    begin, stop = _ints(starts), _ints(ends)
    dims = [d % data.ndim for d in _ints(axes)] if axes is not None else list(range(len(begin)))
    step = _ints(steps) if steps is not None else [1] * len(begin)
    index: list[slice] = [slice(None)] * data.ndim
    for axis, b, e, k in zip(dims, begin, stop, step, strict=True):
        if k <= 0:
            raise SpecprobeError(
                f"Slice with step {k} is not supported (only positive steps)",
                "export the model without reversed slices",
            )
        n = data.shape[axis]
        b = max(0, min(n, b + n if b < 0 else b))
        e = max(0, min(n, e + n if e < 0 else e))
        index[axis] = slice(b, e, k)
    return data[tuple(index)]


def _split(x: Tensor, split: Tensor | None = None, **a: Any) -> tuple[Tensor, ...]:
    axis = a.get("axis", 0)
    sizes = _ints(split) if split is not None else list(a.get("split") or [])
    if not sizes:
        parts = a.get("num_outputs") or 1
        chunk = -(-x.shape[axis] // parts)  # ceil: the last part may be smaller (opset 18)
        return tuple(torch.split(x, chunk, dim=axis))
    return tuple(torch.split(x, sizes, dim=axis))


def _expand(x: Tensor, shape: Tensor, **_: Any) -> Tensor:
    target = torch.broadcast_shapes(tuple(x.shape), tuple(_ints(shape)))
    return x.expand(target)


def _range(start: Tensor, limit: Tensor, delta: Tensor, **_: Any) -> Tensor:
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


def _trilu(x: Tensor, k: Tensor | None = None, **a: Any) -> Tensor:
    diagonal = int(k.item()) if k is not None else 0
    return torch.triu(x, diagonal) if a.get("upper", 1) else torch.tril(x, diagonal)


def _layer_norm(x: Tensor, scale: Tensor, bias: Tensor | None = None, **a: Any) -> Tensor:
    axis = a.get("axis", -1) % x.ndim
    return F.layer_norm(x, tuple(x.shape[axis:]), scale, bias, eps=a.get("epsilon", 1e-5))


def _gelu(x: Tensor, **a: Any) -> Tensor:
    approximate = a.get("approximate", "none")
    return F.gelu(x, approximate=approximate.decode() if isinstance(approximate, bytes) else approximate)


def _reduce(fn: str) -> Callable[..., Tensor]:
    def reduce(x: Tensor, axes: Tensor | None = None, **a: Any) -> Tensor:
        chosen = _axes(a, axes)
        keep = bool(a.get("keepdims", 1))
        if chosen is None or not chosen:
            if a.get("noop_with_empty_axes", 0) and chosen is not None:
                return x
            chosen = list(range(x.ndim))
        dims = tuple(c % x.ndim for c in chosen)
        if fn == "max":
            return x.amax(dim=dims, keepdim=keep)
        return x.sum(dim=dims, keepdim=keep)

    return reduce


def _where(condition: Tensor, x: Tensor, y: Tensor, **_: Any) -> Tensor:
    if x.is_floating_point() and y.is_floating_point() and x.dtype != y.dtype:
        y = y.to(x.dtype) if x.requires_grad or not y.requires_grad else y
        x = x.to(y.dtype)
    return torch.where(condition.bool(), x, y)


_OPS: dict[str, Callable[..., Tensor | tuple[Tensor, ...]]] = {
    "Add": lambda a, b, **_: a + b,
    "Sub": lambda a, b, **_: a - b,
    "Mul": lambda a, b, **_: a * b,
    "Div": lambda a, b, **_: (
        torch.div(a, b, rounding_mode="trunc")
        if not (a.is_floating_point() or b.is_floating_point())
        else a / b
    ),
    "Pow": lambda a, b, **_: a**b,
    "Neg": lambda a, **_: -a,
    "Sqrt": lambda a, **_: torch.sqrt(a),
    "Exp": lambda a, **_: torch.exp(a),
    "Log": lambda a, **_: torch.log(a),
    "Erf": lambda a, **_: torch.erf(a),
    "MatMul": lambda a, b, **_: a @ b,
    "Gemm": _gemm,
    "Relu": lambda a, **_: F.relu(a),
    "LeakyRelu": lambda a, **at: F.leaky_relu(a, at.get("alpha", 0.01)),
    "Tanh": lambda a, **_: torch.tanh(a),
    "Sigmoid": lambda a, **_: torch.sigmoid(a),
    "Softmax": _softmax(torch.softmax),
    "LogSoftmax": _softmax(torch.log_softmax),
    "Identity": lambda a, **_: a,
    "Dropout": lambda a, *rest, **_: a,  # inference semantics, as onnxruntime
    "Conv": _conv,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda a, **_: a.mean(dim=tuple(range(2, a.ndim)), keepdim=True),
    "BatchNormalization": _batchnorm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda a, **at: (
        a.permute(*at["perm"]) if "perm" in at else a.permute(*reversed(range(a.ndim)))
    ),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda *xs, **at: torch.cat(xs, dim=at["axis"]),
    "ReduceMean": _reduce_mean,
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
    "Shape": _shape,
    "Gather": _gather,
    "GatherND": _gather_nd,
    "Slice": _slice,
    "Split": _split,  # several outputs
    "Expand": _expand,
    "Range": _range,
    "Trilu": _trilu,
    "Where": _where,
    "Equal": lambda a, b, **_: torch.eq(a, b),
    "Less": lambda a, b, **_: torch.lt(a, b),
    "LessOrEqual": lambda a, b, **_: torch.le(a, b),
    "Greater": lambda a, b, **_: torch.gt(a, b),
    "GreaterOrEqual": lambda a, b, **_: torch.ge(a, b),
    "And": lambda a, b, **_: torch.logical_and(a, b),
    "Or": lambda a, b, **_: torch.logical_or(a, b),
    "Not": lambda a, **_: torch.logical_not(a),
    "Max": lambda *xs, **_: functools.reduce(torch.maximum, xs),
    "Min": lambda *xs, **_: functools.reduce(torch.minimum, xs),
    "Cos": lambda a, **_: torch.cos(a),
    "Sin": lambda a, **_: torch.sin(a),
    "Abs": lambda a, **_: torch.abs(a),
    "Reciprocal": lambda a, **_: torch.reciprocal(a),
    "Gelu": _gelu,
    "LayerNormalization": _layer_norm,
    # Cast and ConstantOfShape depend on the module's float dtype: see OnnxModule._run.
    "Cast": lambda a, **_: a,
    "ConstantOfShape": lambda a, **_: a,
}
SUPPORTED_OPS = tuple(sorted(_OPS))
"""The ONNX operators the converter runs (standard domain, opset 11 and newer)."""


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


class OnnxModule(nn.Module):
    """An ONNX graph run with torch operators; float initializers are its parameters.

    ``forward`` takes the graph's inputs positionally (in graph order) or by name and
    returns the first graph output (or a tuple of all outputs when there are several).
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        import onnx.numpy_helper

        graph = model.graph
        self.input_names = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
        self.output_names = [o.name for o in graph.output]
        self.nodes = [(n.op_type, list(n.input), list(n.output), _prepared(n)) for n in graph.node]
        unsupported = sorted({op for op, *_ in self.nodes if op not in _OPS and op != "Constant"})
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
                result = torch.full(_ints(args_in[0]), value.item(), dtype=dtype)
            else:
                result = _OPS[op](*args_in, **attrs)
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

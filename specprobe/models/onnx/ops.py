"""The ONNX operators the converter runs, as torch functions of their inputs and attributes.

Each entry of :data:`OPS` takes the node's inputs positionally (None for an omitted
optional input) and its attributes as keywords, and returns a tensor (a tuple for several
outputs). Cast and ConstantOfShape depend on the module's float dtype: the graph runs them
itself (:class:`specprobe.models.onnx.graph.OnnxModule`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from specprobe.errors import SpecprobeError


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


def ints(t: Tensor | None) -> list[int]:
    """The values of an integer tensor (shape, indices, axes) as a flat list; [] for None."""
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
    begin, stop = ints(starts), ints(ends)
    dims = [d % data.ndim for d in ints(axes)] if axes is not None else list(range(len(begin)))
    step = ints(steps) if steps is not None else [1] * len(begin)
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
    sizes = ints(split) if split is not None else list(a.get("split") or [])
    if not sizes:
        parts = a.get("num_outputs") or 1
        chunk = -(-x.shape[axis] // parts)  # ceil: the last part may be smaller (opset 18)
        return tuple(torch.split(x, chunk, dim=axis))
    return tuple(torch.split(x, sizes, dim=axis))


def _expand(x: Tensor, shape: Tensor, **_: Any) -> Tensor:
    target = torch.broadcast_shapes(tuple(x.shape), tuple(ints(shape)))
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


OPS: dict[str, Callable[..., Tensor | tuple[Tensor, ...]]] = {
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
    # Cast and ConstantOfShape depend on the module's float dtype: see graph.OnnxModule.forward.
    "Cast": lambda a, **_: a,
    "ConstantOfShape": lambda a, **_: a,
}
"""The converter's operators by ONNX name (Constant aside: the graph holds its value)."""
SUPPORTED_OPS = tuple(sorted(OPS))
"""The ONNX operators the converter runs (standard domain, opset 11 and newer)."""

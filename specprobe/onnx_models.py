"""ONNX graphs as torch modules, checked against onnxruntime, then measured.

An ONNX file holds a graph of operators and its weights (initializers). :class:`OnnxModule`
runs that graph with torch operators, the floating-point initializers as trainable
``nn.Parameter``s, so autograd (and therefore ``specprobe.measure``) sees the same
function of the same parameters. :func:`load_onnx` converts a file and checks the
converted module against onnxruntime on the user's inputs, reporting the largest
deviation; a mismatch or an operator outside :data:`SUPPORTED_OPS` is a clear error.

Why not onnx2torch: it imports torchvision at import time (for two detection operators),
and torchvision's wheels are tied to one torch build; an extra of ours should not pull a
second torch. The converter here covers the operators of MLPs, CNNs and small
transformer-free classifiers and regressors; it is tested against onnxruntime.

Inputs and targets come from an ``.npz`` or ``.pt`` file (see :func:`load_arrays`).
Requires the ``onnx`` extra: ``pip install "specprobe[onnx]"`` (onnx, onnxruntime).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from specprobe.adapters import Adapter, CallableAdapter, Loss
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
    axis = a.get("axis", 1) % max(x.ndim, 1)
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _axes(a: Mapping[str, Any], second: Tensor | None) -> list[int] | None:
    if second is not None:
        return [int(v) for v in second.tolist()]
    axes = a.get("axes")
    return list(axes) if axes is not None else None


def _unsqueeze(x: Tensor, axes: Tensor | None = None, **a: Any) -> Tensor:
    for axis in sorted(ax % (x.ndim + 1) for ax in (_axes(a, axes) or [])):
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


_OPS: dict[str, Callable[..., Tensor]] = {
    "Add": lambda a, b, **_: a + b,
    "Sub": lambda a, b, **_: a - b,
    "Mul": lambda a, b, **_: a * b,
    "Div": lambda a, b, **_: a / b,
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
}
SUPPORTED_OPS = tuple(sorted(_OPS))
"""The ONNX operators the converter runs (standard domain, opset 11 and newer)."""


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
        self.nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in graph.node]
        unsupported = sorted({op for op, *_ in self.nodes if op not in _OPS and op != "Constant"})
        if unsupported:
            raise SpecprobeError(
                f"the ONNX graph uses operator(s) {', '.join(unsupported)}, which specprobe cannot convert",
                f"supported operators: {', '.join(SUPPORTED_OPS)}; export the model with those, "
                "or measure the torch module directly with specprobe.measure",
            )
        self._names: dict[str, str] = {}  # ONNX tensor name -> attribute name
        params = nn.ParameterDict()
        for i, init in enumerate(graph.initializer):
            array = onnx.numpy_helper.to_array(init).copy()
            key = f"p{i}"
            self._names[init.name] = key
            tensor = torch.from_numpy(array)
            if tensor.is_floating_point():
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
        for op, inputs, outputs, attrs in self.nodes:
            if op == "Constant":
                continue
            args_in = [values[n] if n else None for n in inputs]
            result = _OPS[op](*args_in, **attrs)
            values[outputs[0]] = result
        outs = tuple(values[n] for n in self.output_names)
        return outs[0] if len(outs) == 1 else outs


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


def onnx_batch(
    module: OnnxModule, inputs: dict[str, Tensor], arrays: Mapping[str, np.ndarray]
) -> tuple[Any, Adapter]:
    """The batch for ``specprobe.measure`` and its adapter: classification for integer
    targets (cross-entropy), regression for real ones (MSE)."""
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


def measure_onnx_file(
    path: str | Path,
    inputs_path: str | Path,
    *,
    estimator: str = "hutchinson",
    probes: int = 32,
    seed: int = 0,
    params: tuple[str, ...] | None = None,
    groups: Any = None,
    tolerance: float = 1e-4,
) -> tuple[dict[str, Any], OnnxCheck]:
    """Convert, check and measure an ONNX model; returns a results record and the check.

    The record has the format ``specprobe analyze`` writes (revision ``onnx``), with the
    conversion check under ``onnx_check``.
    """
    from specprobe.data import fingerprint_ids
    from specprobe.lnp import measure
    from specprobe.sweep import measured_record

    arrays = load_arrays(inputs_path)
    module, inputs, check = load_onnx(path, arrays, tolerance)
    batch, adapter = onnx_batch(module, inputs, arrays)
    result = measure(
        module,
        batch,
        estimator=estimator,
        probes=probes,
        seed=seed,
        adapter=adapter,
        params=params,
        groups=groups,
    )
    settings = {
        "probe": {"estimator": estimator, "probes": probes, "seed": seed, "params": params, "groups": groups},
        "data": {"inputs": str(inputs_path)},
    }
    record = measured_record(
        module,
        [result],
        settings,
        name=str(path),
        label=Path(path).stem,
        revision="onnx",
        dataset_fingerprint=fingerprint_ids(torch.from_numpy(np.ascontiguousarray(arrays["targets"]))),
        onnx_check={
            "max_abs_error": check.max_abs_error,
            "max_rel_error": check.max_rel_error,
            "tolerance": check.tolerance,
        },
    )
    return record, check

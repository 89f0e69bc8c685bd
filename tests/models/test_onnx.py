"""ONNX graphs: converted to torch, checked against onnxruntime, measured like the original."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import specprobe
from specprobe.cli.app import app
from specprobe.models.onnx.batch import load_arrays
from specprobe.models.onnx.graph import load_onnx
from specprobe.store.results import ResultStore

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

runner = CliRunner()


def export(model: nn.Module, example: torch.Tensor, path: Path, name: str = "x") -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=[name],
            output_names=["y"],
            dynamic_axes={name: {0: "n"}},
            dynamo=False,
        )
    return path


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def cnn() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, stride=2),
        nn.Sigmoid(),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def test_onnx_classifier_measures_like_the_torch_module(tmp_path: Path) -> None:
    model = mlp()
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 3, (10,), generator=torch.Generator().manual_seed(4))
    path = export(model, x, tmp_path / "mlp.onnx")
    np.savez(tmp_path / "data.npz", x=x.numpy(), targets=y.numpy())
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "analyze",
            str(path),
            "--inputs",
            str(tmp_path / "data.npz"),
            "--estimator",
            "exact",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "matches onnxruntime" in result.output
    (record,) = ResultStore(out).records()
    direct = specprobe.measure(model, (x, y), estimator="exact")
    for field in ("loss", "chi_loss", "chi_net", "grad_norm_sq", "spectral_position"):
        assert record[field] == pytest.approx(getattr(direct, field), rel=1e-4), field
    assert record["num_params"] == sum(p.numel() for p in model.parameters())
    assert record["onnx_check"]["max_rel_error"] < 1e-5
    assert record["revision"] == "onnx"


def test_onnx_cnn_regression_matches_onnxruntime(tmp_path: Path) -> None:
    model = cnn()
    with torch.no_grad():  # non-trivial running statistics for BatchNormalization
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    path = export(model, x, tmp_path / "cnn.onnx", name="image")
    targets = torch.randn(6, 2, generator=torch.Generator().manual_seed(6))
    torch.save({"inputs": x, "targets": targets}, tmp_path / "data.pt")
    arrays = load_arrays(tmp_path / "data.pt")
    module, inputs, check = load_onnx(path, arrays)
    assert check.max_rel_error < 1e-5
    with torch.no_grad():
        assert torch.allclose(module(**inputs), model(x), atol=1e-5)
    # The exporter folds BatchNorm into the convolution: the same function of different
    # parameters, so the kernel is compared with the dense reference of the graph's own.
    batch = (inputs["image"], torch.from_numpy(arrays["targets"]))
    m = specprobe.measure(module.double(), (batch[0].double(), batch[1].double()), estimator="exact")
    ref = specprobe.dense_kernel(module, (batch[0].double(), batch[1].double()))
    assert m.chi_net == pytest.approx(ref.chi_net, rel=1e-8)
    assert m.spectral_position == pytest.approx(ref.spectral_position, rel=1e-8)
    assert m.loss_kind == "mse"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("garbage", "is not a valid ONNX model"),
        ("lstm", "operator(s) LSTM, which specprobe cannot convert"),
        ("names", "expects inputs ['x']"),
        ("shape", "onnxruntime rejects the inputs"),
        ("targets", "expected a 'targets' array"),
        ("no-inputs", "an ONNX model needs --inputs"),
    ],
)
def test_onnx_bad_input(tmp_path: Path, case: str, message: str) -> None:
    x = torch.randn(5, 4)
    path = export(mlp(), x, tmp_path / "mlp.onnx")
    data = {"x": x.numpy(), "targets": np.zeros(5, dtype=np.int64)}
    if case == "garbage":
        path = tmp_path / "bad.onnx"
        path.write_bytes(b"not a protobuf at all")
    elif case == "lstm":

        class Recurrent(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.rnn = nn.LSTM(4, 3, batch_first=True)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.rnn(x)[0][:, -1]

        path = export(Recurrent(), torch.randn(2, 5, 4), tmp_path / "rnn.onnx")
        data = {"x": np.random.randn(2, 5, 4).astype(np.float32), "targets": np.zeros(2, dtype=np.int64)}
    elif case == "names":
        data = {"features": x.numpy(), "y": np.zeros(5), "targets": data["targets"]}
    elif case == "shape":
        data["x"] = np.random.randn(5, 7).astype(np.float32)
    elif case == "targets":
        del data["targets"]
    np.savez(tmp_path / "data.npz", **data)
    args = ["analyze", str(path), "--out", str(tmp_path / "run")]
    if case != "no-inputs":
        args += ["--inputs", str(tmp_path / "data.npz")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "hint:" in result.output
    assert not (tmp_path / "run").exists()

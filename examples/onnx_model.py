"""An ONNX model, end to end: export a small torch classifier, then analyze the .onnx file.

Writes ``model.onnx`` and ``data.npz`` (keys: ``x``, the graph input, and ``targets``)
into the output folder, then runs the same command a user would:

    specprobe analyze model.onnx --inputs data.npz

    python examples/onnx_model.py [--out specprobe-runs/onnx-example]

Needs the ONNX extra: pip install "specprobe[onnx]".
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from typer.testing import CliRunner

from specprobe.cli.app import app


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="specprobe-runs/onnx-example")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    x = torch.randn(48, 6)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (x,),
            str(out / "model.onnx"),
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}},
            dynamo=False,
        )
    np.savez(out / "data.npz", x=x.numpy(), targets=y.numpy())
    command = [
        "analyze",
        str(out / "model.onnx"),
        "--inputs",
        str(out / "data.npz"),
        "--out",
        str(out / "run"),
    ]
    print("specprobe " + " ".join(command))
    result = CliRunner().invoke(app, command)
    print(result.output)
    if result.exit_code != 0:
        raise SystemExit(result.exit_code)
    return out / "run"


if __name__ == "__main__":
    main()

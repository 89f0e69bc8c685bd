"""An ONNX causal language model, end to end: export a tiny Llama, analyze the .onnx file,
and compare with the torch model it came from.

Writes ``model.onnx`` and ``tokens.npz`` (keys: ``input_ids``, ``attention_mask``; no
``targets``: a causal LM predicts its next tokens) into the output folder, then runs

    specprobe analyze model.onnx --inputs tokens.npz --estimator exact

and measures the torch model on the same tokens: the two agree to float32 rounding.

    python examples/onnx_causal_lm.py [--out specprobe-runs/onnx-lm-example]

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

import specprobe
from specprobe.cli.app import app
from specprobe.models.tiny import tiny_causal_lm
from specprobe.store.results import ResultStore


class Logits(nn.Module):
    """What the exporter traces: token ids and attention mask in, logits out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="specprobe-runs/onnx-lm-example")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = tiny_causal_lm("llama", vocab_size=64, hidden_size=32, seed=0)
    # Exporters store equal initializers once: a fresh model's RMSNorm weights are all
    # ones, so each would become one shared parameter of the graph. A little noise keeps
    # the graph's parameters those of the module (as after any training).
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    ids = torch.randint(0, 64, (4, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[3, 10:] = 0  # one padded sequence
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            Logits(model.eval()),
            (ids, mask),
            str(out / "model.onnx"),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": axes},
            dynamo=False,
        )
    np.savez(out / "tokens.npz", input_ids=ids.numpy(), attention_mask=mask.numpy())
    command = [
        "analyze",
        str(out / "model.onnx"),
        "--inputs",
        str(out / "tokens.npz"),
        "--estimator",
        "exact",
    ]
    command += ["--out", str(out / "run")]
    print("specprobe " + " ".join(command))
    result = CliRunner().invoke(app, command)
    print(result.output)
    if result.exit_code != 0:
        raise SystemExit(result.exit_code)
    (record,) = ResultStore(out / "run").records()
    direct = specprobe.measure(model, {"input_ids": ids, "attention_mask": mask}, estimator="exact")
    print(f"{'':20} {'ONNX graph':>14} {'torch model':>14}")
    deviation = {}
    for field in ("loss", "chi_net", "spectral_position", "normalized_position"):
        print(f"{field:20} {record[field]:14.7g} {getattr(direct, field):14.7g}")
        deviation[field] = abs(record[field] - getattr(direct, field)) / abs(getattr(direct, field))
    return deviation


if __name__ == "__main__":
    main()

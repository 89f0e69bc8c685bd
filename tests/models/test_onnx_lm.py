"""ONNX causal language models (tiny GPT-2 and Llama, exported with torch.onnx.export):
converted, checked against onnxruntime, and measured like the torch model they came from."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import specprobe
from specprobe.cli.app import app
from specprobe.models.onnx.batch import load_arrays, measured_module, onnx_batch
from specprobe.models.onnx.graph import load_onnx
from specprobe.models.onnx.ops import SUPPORTED_OPS
from specprobe.models.tiny import tiny_causal_lm
from specprobe.store.results import ResultStore

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

runner = CliRunner()
VOCAB = 32


class Logits(nn.Module):
    """The Hugging Face model as the exporter sees it: token ids and mask in, logits out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def tiny_lm(arch: str) -> nn.Module:
    """A tiny causal LM whose parameters are all distinct: the exporter stores equal
    initializers once (a freshly initialised model's LayerNorm weights are all ones, its
    biases all zeros), and a tied embedding twice (as itself and transposed), and either
    would make the graph's parameters differ from the module's."""
    model = tiny_causal_lm(arch, vocab_size=VOCAB, hidden_size=16, seed=0)
    if arch == "gpt2":
        model.config.tie_word_embeddings = False
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def tokens(n: int = 3, s: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, VOCAB, (n, s), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding: the converted graph must honour the mask
    return ids, mask


def export_lm(model: nn.Module, path: Path, dynamo: bool) -> Path:
    """torch.onnx.export with the TorchScript exporter, or the dynamo one (needs onnxscript)."""
    ids, mask = tokens()
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Logits(model),
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": axes},
            dynamo=dynamo,
        )
    return path


@pytest.mark.parametrize(
    ("arch", "exporter"),
    [
        ("gpt2", "torchscript"),
        ("llama", "torchscript"),
        # The dynamo exporter takes about 8 s a model; one architecture shows it works.
        pytest.param("llama", "dynamo", marks=pytest.mark.slow),
    ],
)
def test_onnx_causal_lm_measures_like_the_torch_model(tmp_path: Path, arch: str, exporter: str) -> None:
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")  # the dynamo exporter's dependency
    model = tiny_lm(arch)
    path = export_lm(model, tmp_path / f"{arch}.onnx", dynamo=exporter == "dynamo")
    ids, mask = tokens()
    np.savez(tmp_path / "tokens.npz", input_ids=ids.numpy(), attention_mask=mask.numpy())
    out = tmp_path / "run"
    args = ["analyze", str(path), "--inputs", str(tmp_path / "tokens.npz"), "--estimator", "exact"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "matches onnxruntime" in result.output
    (record,) = ResultStore(out).records()
    assert record["onnx_check"]["max_rel_error"] < 1e-5
    batch = {"input_ids": ids, "attention_mask": mask}
    direct = specprobe.measure(model, batch, estimator="exact")
    # Counted rows: 3 sequences of 9 tokens, less each last position and 3 padded ones.
    assert record["num_outputs"] == direct.num_outputs == (3 * 8 - 3) * VOCAB
    assert record["num_params"] == sum(p.numel() for p in model.parameters())
    for field in ("loss", "chi_loss", "chi_net", "grad_norm_sq", "spectral_position"):
        assert record[field] == pytest.approx(getattr(direct, field), rel=1e-4), field
    # In float64 the converted graph and the torch model agree to the rounding of the graph's
    # constants, which the exporter stores in float32 (GELU's 0.044715, 1/√d, …).
    arrays = load_arrays(tmp_path / "tokens.npz")
    graph, inputs, _ = load_onnx(path, arrays)
    onnx_batch_, adapter = onnx_batch(graph, inputs, arrays)
    converted = specprobe.measure(
        measured_module(graph, arrays).double(), onnx_batch_, adapter=adapter, estimator="exact"
    )
    reference = specprobe.measure(model.double(), batch, estimator="exact")
    for field in ("loss", "chi_loss", "chi_net", "grad_norm_sq", "spectral_position"):
        assert getattr(converted, field) == pytest.approx(getattr(reference, field), rel=1e-7), field


def test_language_model_operators_are_supported() -> None:
    for op in ("Gather", "Shape", "Slice", "Cast", "Where", "Expand", "Range", "Equal", "Trilu"):
        assert op in SUPPORTED_OPS, op
    for op in ("LayerNormalization", "Split", "ConstantOfShape", "Cos", "Sin", "Gelu", "GatherND"):
        assert op in SUPPORTED_OPS, op


def test_onnx_causal_lm_example(tmp_path: Path) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "examples" / "onnx_causal_lm.py"
    spec = importlib.util.spec_from_file_location("onnx_causal_lm", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    deviation = example.main(["--out", str(tmp_path)])
    assert max(deviation.values()) < 1e-4

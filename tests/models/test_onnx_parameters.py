"""An ONNX graph's parameters against the torch model's: a tied GPT-2 exported untied, or a
fresh GPT-NeoX whose equal initialisers the exporter merged, is said, with the difference;
a graph whose parameters are the model's measures as the model does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import specprobe
from specprobe.cli.app import app
from specprobe.config import ProbeSpec
from specprobe.models.tiny import tiny_causal_lm
from tests.models.test_onnx_lm import VOCAB, export_lm, tokens

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

EXACT = ProbeSpec(estimator=specprobe.Estimator.EXACT)


def trained_like(arch: str) -> torch.nn.Module:
    """A tiny LM whose parameters are all distinct (as after training); GPT-2 keeps its tie."""
    model = tiny_causal_lm(arch, vocab_size=VOCAB, hidden_size=16, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    ids, mask = tokens()
    path = tmp_path / "tokens.npz"
    np.savez(path, input_ids=ids.numpy(), attention_mask=mask.numpy())
    return path


def test_a_tied_gpt2_exported_untied_is_said_with_the_difference(tmp_path: Path, inputs: Path) -> None:
    from specprobe.pipeline.onnx import measure_onnx_file

    model = trained_like("gpt2")
    path = export_lm(model, tmp_path / "gpt2.onnx", dynamo=False)
    record, _ = measure_onnx_file(path, inputs, EXACT, reference=model)
    known = record["onnx_parameters"]
    assert known["same"] is False and known["repeated"] == ["transformer.wte.weight"]
    assert known["graph_params"] - known["torch_params"] == VOCAB * 16  # the embedding, twice
    assert "transformer.wte.weight stored more than once (untied)" in known["note"]
    # It matters: the graph's position is not the torch model's.
    ids, mask = tokens()
    direct = specprobe.measure(model, {"input_ids": ids, "attention_mask": mask}, estimator="exact")
    assert abs(record["spectral_position"] / direct.spectral_position - 1) > 1e-3
    # Without the torch model, the repeated values alone say it.
    alone, _ = measure_onnx_file(path, inputs, EXACT)
    assert alone["onnx_parameters"]["repeated"] == 1
    assert "a tied weight stored twice" in alone["onnx_parameters"]["note"]
    result = CliRunner().invoke(
        app,
        [
            "analyze",
            str(path),
            "--inputs",
            str(inputs),
            "--estimator",
            "exact",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "a tied weight stored twice" in result.output


def test_a_graph_with_the_models_parameters_measures_as_the_model(tmp_path: Path, inputs: Path) -> None:
    from specprobe.pipeline.onnx import measure_onnx_file

    model = trained_like("gpt_neox")
    path = export_lm(model, tmp_path / "neox.onnx", dynamo=False)
    record, _ = measure_onnx_file(path, inputs, EXACT, reference=model)
    assert record["onnx_parameters"]["same"] is True and record["onnx_parameters"]["note"] is None
    ids, mask = tokens()
    direct = specprobe.measure(model, {"input_ids": ids, "attention_mask": mask}, estimator="exact")
    for name in ("loss", "chi_net", "spectral_position"):
        assert record[name] == pytest.approx(getattr(direct, name), rel=1e-5), name
    # Without the torch model and without an exporter's signature, it is said to be unchecked.
    alone, _ = measure_onnx_file(path, inputs, EXACT)
    assert "not checked against the torch model" in alone["onnx_parameters"]["note"]


def test_merged_initialisers_of_a_fresh_model_are_said(tmp_path: Path, inputs: Path) -> None:
    from specprobe.models.onnx.graph import load_onnx
    from specprobe.models.onnx.parameters import compare_parameters

    model = tiny_causal_lm(
        "gpt_neox", vocab_size=VOCAB, hidden_size=16, seed=0
    ).eval()  # norm weights all ones
    path = export_lm(model, tmp_path / "fresh.onnx", dynamo=False)
    ids, mask = tokens()
    graph, _, _ = load_onnx(path, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    comparison = compare_parameters(graph, model)
    assert not comparison.same
    assert comparison.torch_params - comparison.graph_params == 7616 - 7312
    assert "gpt_neox.final_layer_norm.weight" in comparison.missing


@pytest.mark.slow
def test_the_dynamo_signature_says_what_was_merged(tmp_path: Path, inputs: Path) -> None:
    pytest.importorskip("onnxscript")
    from specprobe.pipeline.onnx import measure_onnx_file

    model = tiny_causal_lm("gpt_neox", vocab_size=VOCAB, hidden_size=16, seed=0).eval()
    path = export_lm(model, tmp_path / "fresh.onnx", dynamo=True)
    record, _ = measure_onnx_file(path, inputs, EXACT)
    known = record["onnx_parameters"]
    assert known["signature_tensors"] == 28 and known["graph_tensors"] == 14
    assert "signature names 28 torch parameters" in known["note"]

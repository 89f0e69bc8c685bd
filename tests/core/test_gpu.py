"""Checks that need a CUDA device; skipped where there is none (CI has none)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import specprobe
from specprobe.cli.app import app
from tests.conftest import CASES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_selftest_on_cuda() -> None:
    result = CliRunner().invoke(app, ["selftest", "--device", "cuda", "--probes", "16"])
    assert result.exit_code == 0, result.output
    assert "on cuda" in result.output


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cuda_matches_cpu(case: object) -> None:
    model, batch = case.build(torch.float64)  # type: ignore[attr-defined]
    cpu = specprobe.measure(model, batch, estimator="exact")
    moved = model.to("cuda")
    on_gpu = (
        {k: v.to("cuda") for k, v in batch.items()}
        if isinstance(batch, dict)
        else tuple(t.to("cuda") for t in batch)
    )
    gpu = specprobe.measure(moved, on_gpu, estimator="exact")
    for field in ("loss", "grad_norm_sq", "chi_loss", "chi_net", "spectral_position"):
        assert getattr(gpu, field) == pytest.approx(getattr(cpu, field), rel=1e-8), field


def test_spectrum_on_cuda_matches_dense() -> None:
    model, batch = CASES[2].build(torch.float64)
    model = model.to("cuda")
    batch = {k: v.to("cuda") for k, v in batch.items()}
    ref = specprobe.dense_kernel(model, batch)
    spec = specprobe.spectrum(model, batch, k=5)
    assert spec.eigenvalues.tolist() == pytest.approx(ref.eigenvalues[:5].cpu().tolist(), rel=1e-6)


def test_probes_drawn_on_cuda_equal_the_cpu_draw() -> None:
    from specprobe.core.probes import rademacher

    cpu = rademacher(5, range(3), range(4), (7, 50_304))
    gpu = rademacher(5, range(3), range(4), (7, 50_304), device="cuda")
    assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.parametrize("estimator", ["hutchinson", "hutchinson_per_sample"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hutchinson_on_cuda_equals_cpu_to_rounding(case: object, estimator: str) -> None:
    # The same probes on both devices, so the estimates agree to rounding, not to noise.
    model, batch = case.build(torch.float64)  # type: ignore[attr-defined]
    cpu = specprobe.measure(model, batch, estimator=estimator, probes=8, seed=3)
    on_gpu = (
        {k: v.to("cuda") for k, v in batch.items()}
        if isinstance(batch, dict)
        else tuple(t.to("cuda") for t in batch)
    )
    gpu = specprobe.measure(model.to("cuda"), on_gpu, estimator=estimator, probes=8, seed=3)
    for field in ("chi_net", "chi_net_stderr", "spectral_position"):
        assert getattr(gpu, field) == pytest.approx(getattr(cpu, field), rel=1e-8), field


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["float64", "bfloat16"])
def test_v_on_the_host_equals_v_on_the_gpu(dtype: torch.dtype) -> None:
    """``gradient_sum_device="cpu"``: V summed in the host's memory and brought back tensor
    by tensor for the second pass gives the numbers of V on the GPU, and the plan says so."""
    model, batch = CASES[2].build(torch.float64)
    model = model.to("cuda", dtype)
    on_gpu = {k: v.to("cuda") for k, v in batch.items()}
    common = dict(estimator="hutchinson_per_sample", probes=4, seed=3, micro_batch_size=1)
    plans: list[object] = []
    device = specprobe.measure(model, on_gpu, gradient_sum_device="device", **common)  # type: ignore[arg-type]
    host = specprobe.measure(model, on_gpu, gradient_sum_device="cpu", plan=plans.append, **common)  # type: ignore[arg-type]
    rel = 1e-10 if dtype == torch.float64 else 1e-5  # float32 sums, added in another order
    for field in ("chi_net", "spectral_position", "population_position", "grad_norm_sq"):
        assert getattr(host, field) == pytest.approx(getattr(device, field), rel=rel), field
    assert plans[0].gradient_sum_on_host and plans[0].host > 0  # type: ignore[attr-defined]

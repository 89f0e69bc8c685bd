"""Eigen-solvers, SLQ, deflated traces and summaries against the dense reference in float64."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
import torch

import specprobe
from specprobe.core.dense import DenseKernel
from specprobe.core.operator import MatrixOperator, NTKOperator
from specprobe.core.probes import rademacher_columns
from specprobe.linalg.density import spectral_density, spectral_density_of
from specprobe.linalg.spectrum import EigenMethod, spectrum, spectrum_of
from specprobe.linalg.summary import power_law_fit, summarize_spectrum
from specprobe.linalg.trace import deflated_trace
from tests.conftest import CASES, HEAD_CASES, Case

F64 = torch.float64
SOLVER_CASES = CASES[:4]  # MLP regression and classification, GPT-NeoX padded, GPT-2 tied


def rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) / np.abs(b)


def separated(eigenvalues: np.ndarray, k: int, gap: float = 1e-3) -> np.ndarray:
    """Which of the top k eigenvalues are apart from their neighbours (vectors defined up to sign)."""
    lam = eigenvalues[: k + 1]
    ok = np.ones(k, dtype=bool)
    for i in range(k):
        for j in (i - 1, i + 1):
            if 0 <= j < lam.size and abs(lam[i] - lam[j]) <= gap * lam[i]:
                ok[i] = False
    return ok


def gauss_bracket(nodes: np.ndarray, weights: np.ndarray, t: float) -> tuple[float, float, float]:
    """One probe's SLQ mass at or above t, and the Gauss weights of the nearest nodes above and below t."""
    above, below = (nodes >= t) & (weights > 0), (nodes < t) & (weights > 0)
    first_above = float(weights[above][np.argmin(nodes[above])]) if above.any() else 0.0
    last_below = float(weights[below][np.argmax(nodes[below])]) if below.any() else 0.0
    return float(weights[above].sum()), first_above, last_below


@cache
def trained_gpt_neox() -> tuple[torch.nn.Module, dict, DenseKernel]:
    """The padded GPT-NeoX case after 40 Adam steps on its batch: a top-heavy spectrum."""
    model, batch = CASES[2].build(F64)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    model.train()
    for _ in range(40):
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
    model.eval()
    return model, batch, specprobe.dense_kernel(model, batch)


@pytest.mark.parametrize("case", SOLVER_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("method", ["lanczos", "lobpcg", "dense"])
def test_top_eigenpairs_match_dense_reference(case: Case, method: str) -> None:
    model, batch = case.build(F64)
    ref = specprobe.dense_kernel(model, batch)
    k = 6
    op = NTKOperator(model, batch)
    result = spectrum_of(op, k, method=method, tol=1e-8, return_eigenvectors=True)
    lam = ref.eigenvalues.numpy()
    assert result.eigenvalues.shape == (k,) and result.all_converged
    assert (rel(result.eigenvalues, lam[:k]) <= 1e-6).all()
    assert (np.diff(result.eigenvalues) <= 0).all()
    assert (result.residuals <= 1e-8).all()
    # Residuals are honest: recompute ‖Θv − λv‖/λ from the dense kernel.
    vectors = result.eigenvectors
    assert vectors is not None and vectors.shape == (ref.theta.shape[0], k)
    recomputed = (ref.theta @ vectors - vectors * torch.from_numpy(result.eigenvalues)).norm(dim=0)
    assert (recomputed.numpy() / result.eigenvalues <= 1e-7).all()
    # Eigenvectors up to sign (where the eigenvalue is separated), and the overlaps q_k.
    cosines = (vectors.T @ ref.eigenvectors[:, :k]).diagonal().abs().numpy()
    assert (1 - cosines[separated(lam, k)] <= 1e-6).all()
    assert np.abs(result.overlaps - ref.overlaps[:k].numpy()).max() <= 1e-6
    assert result.chi_loss == pytest.approx(ref.chi_loss, rel=1e-12)
    assert result.products == op.products and result.num_outputs == ref.theta.shape[0]


def test_model_level_spectrum_restores_state_and_matches_operator() -> None:
    model, batch = CASES[3].build(F64)
    model.train()
    result = spectrum(model, batch, k=4, tol=1e-8, seed=3, micro_batch_size=2)
    assert model.training and all(p.requires_grad for p in model.parameters())
    again = spectrum_of(NTKOperator(model, batch), 4, tol=1e-8, seed=3)
    assert np.allclose(result.eigenvalues, again.eigenvalues, rtol=1e-10)
    assert result.product_mode == "double_vjp" and result.method == "lanczos"
    head = spectrum(model, batch, k=4, params="lm_head.*")
    ref = specprobe.dense_kernel(model, batch, params="lm_head.*")
    assert (rel(head.eigenvalues, ref.eigenvalues[:4].numpy()) <= 1e-6).all()


@pytest.mark.parametrize("method", ["lanczos", "lobpcg"])
def test_a_tiny_budget_says_not_converged(method: str) -> None:
    model, batch = CASES[2].build(F64)
    ref = specprobe.dense_kernel(model, batch)
    k = 6
    result = spectrum(model, batch, k=k, method=method, tol=1e-8, max_products=14)
    assert not result.all_converged
    assert result.products <= 14 + 2  # the budget, plus the operator's 2-product self-check
    assert (result.residuals[~result.converged] > 1e-8).all()
    # Whatever is flagged converged is right.
    errors = rel(result.eigenvalues, ref.eigenvalues[:k].numpy())
    assert (errors[result.converged] <= 1e-6).all()
    assert errors.max() > 1e-6  # and the budget really was too small
    summary = summarize_spectrum(result)
    assert summary["spectrum_converged"] is False
    assert summary["spectrum_num_converged"] == result.num_converged < k
    # The stopping rule says what it reached and why it stopped (issue 31).
    assert result.stopped_by == summary["spectrum_stopped_by"] == "products"
    line = result.describe()
    assert f"{result.num_converged} of {k} eigenpairs converged to tol 1e-08" in line
    assert "budget of products (max_products)" in line and "\n" not in line


@pytest.mark.parametrize("method", ["lanczos", "lobpcg"])
def test_a_time_budget_stops_the_solve_and_says_so(method: str) -> None:
    """``max_seconds``: the solve stops after the first step past it; what it reached is
    stated, and what is flagged converged is right."""
    model, batch = CASES[2].build(F64)
    ref = specprobe.dense_kernel(model, batch)
    result = spectrum(model, batch, k=6, method=method, tol=1e-12, max_seconds=1e-9)
    assert result.stopped_by == "time" and not result.all_converged
    assert "time budget (max_seconds)" in result.describe()
    errors = rel(result.eigenvalues, ref.eigenvalues[:6].numpy())
    assert (errors[result.converged] <= 1e-6).all()
    unlimited = spectrum(model, batch, k=6, method=method, tol=1e-8)
    assert unlimited.stopped_by == "tolerance" and unlimited.all_converged
    assert unlimited.describe().startswith("6 of 6 eigenpairs converged")
    with pytest.raises(specprobe.SpecprobeError, match="max_seconds > 0"):
        spectrum(model, batch, k=2, max_seconds=0)


def test_repeated_eigenvalues_need_a_block() -> None:
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(60, 60, generator=g, dtype=F64))
    lam = torch.cat(
        [torch.tensor([5.0, 3.0, 3.0, 3.0, 2.0], dtype=F64), torch.rand(55, generator=g, dtype=F64)]
    )
    op = MatrixOperator(basis @ torch.diag(lam) @ basis.T)
    result = spectrum_of(op, 5, block_size=4, tol=1e-10)
    assert result.all_converged
    assert np.allclose(result.eigenvalues, [5, 3, 3, 3, 2], rtol=1e-10)
    lobpcg = spectrum_of(op, 5, method="lobpcg", tol=1e-10)
    assert np.allclose(lobpcg.eigenvalues, [5, 3, 3, 3, 2], rtol=1e-10)


@pytest.mark.parametrize("method", ["lanczos", "lobpcg"])
def test_head_only_kernel_repeats_every_eigenvalue(method: str) -> None:
    # GPT-NeoX's head has no bias: Θ_head = (H Hᵀ) ⊗ I_V, each eigenvalue V = 32 times, so
    # the top 8 are one value. A Krylov space from b random vectors holds only b copies,
    # each with a tiny residual; the solver must notice the cluster and look for more.
    model, batch = HEAD_CASES[0].build(F64)
    ref = specprobe.dense_kernel(model, batch, params="lm_head.*")
    assert float(ref.eigenvalues[0] - ref.eigenvalues[31]) <= 1e-10 * float(ref.eigenvalues[0])
    result = spectrum(model, batch, k=8, method=method, params="lm_head.*", tol=1e-8)
    assert result.all_converged
    assert (rel(result.eigenvalues, ref.eigenvalues[:8].numpy()) <= 1e-8).all()


def test_low_rank_kernel() -> None:
    # Θ = J Jᵀ of rank 3 < k: the zero eigenvalues converge too (residuals relative to √ε·λ_1).
    g = torch.Generator().manual_seed(1)
    jac = torch.randn(40, 3, generator=g, dtype=F64)
    theta = jac @ jac.T
    op = MatrixOperator(theta)
    result = spectrum_of(op, 5, tol=1e-6)
    expected = torch.linalg.eigvalsh(theta).flip(0)[:3].numpy()
    assert np.allclose(result.eigenvalues[:3], expected, rtol=1e-10)
    assert np.abs(result.eigenvalues[3:]).max() <= 1e-10 * expected[0]
    assert result.all_converged


def test_float32_model() -> None:
    model, batch = CASES[2].build(torch.float32)
    ref = specprobe.dense_kernel(model.double(), batch)
    result = spectrum(model.float(), batch, k=4, tol=1e-4)
    assert result.all_converged
    assert (rel(result.eigenvalues, ref.eigenvalues[:4].numpy()) <= 1e-4).all()
    assert np.abs(result.overlaps - ref.overlaps[:4].numpy()).max() <= 1e-4


def test_dense_method_gives_the_exact_trace_and_refuses_large_d() -> None:
    model, batch = CASES[1].build(F64)
    ref = specprobe.dense_kernel(model, batch)
    result = spectrum(model, batch, k=3, method=EigenMethod.DENSE)
    assert result.trace == pytest.approx(ref.chi_net, rel=1e-12) and result.trace_stderr == 0.0
    with pytest.raises(specprobe.TooLargeError, match="max_dense_outputs=10") as err:
        spectrum(model, batch, k=3, method="dense", max_dense_outputs=10)
    assert "lanczos" in err.value.hint


# ---- position index, SLQ, effective rank -------------------------------------------------


@pytest.mark.parametrize("case", CASES[:2], ids=lambda c: c.name)
def test_position_index_inside_the_top_k_is_exact(case: Case) -> None:
    model, batch = case.build(F64)
    ref = specprobe.dense_kernel(model, batch)
    m = specprobe.measure(model, batch, estimator="exact")
    threshold = ref.spectral_position * ref.chi_net
    expected = int((ref.eigenvalues >= threshold).sum())
    result = spectrum(model, batch, k=expected + 2, tol=1e-8)
    summary = summarize_spectrum(result, chi_net=m.chi_net, chi_pos=m.spectral_position)
    assert summary["position_index"] == expected
    assert summary["position_index_is_estimate"] is False
    assert summary["position_threshold"] == pytest.approx(threshold, rel=1e-10)
    assert summary["spectrum_trace_source"] == "chi_net"


def test_position_index_beyond_the_top_k_comes_from_slq() -> None:
    model, batch = CASES[2].build(F64)
    ref = specprobe.dense_kernel(model, batch)
    m = specprobe.measure(model, batch, estimator="exact")
    expected = int((ref.eigenvalues >= ref.spectral_position * ref.chi_net).sum())  # 67 of 384
    op = NTKOperator(model, batch)
    with op:
        result = spectrum_of(op, 6, tol=1e-6)
        density = spectral_density_of(op, probes=8, steps=40, seed=0)
    summary = summarize_spectrum(result, chi_net=m.chi_net, chi_pos=m.spectral_position, density=density)
    assert summary["position_index_is_estimate"] is True
    assert summary["position_index_lower_bound"] == 6
    estimate, stderr = summary["position_index"], summary["position_index_stderr"]
    assert stderr > 0 and abs(estimate - expected) <= 3 * stderr + 0.1 * expected
    without = summarize_spectrum(result, chi_net=m.chi_net, chi_pos=m.spectral_position)
    assert without["position_index"] is None and without["position_index_lower_bound"] == 6


def test_slq_quadrature_is_exact_with_a_full_krylov_space() -> None:
    # With steps = D the Gauss quadrature is exact for every f: D Σ_j τ_j f(θ_j) = zᵀ f(Θ) z.
    model, batch = CASES[1].build(F64)  # D = 27
    ref = specprobe.dense_kernel(model, batch)
    d, probes = ref.theta.shape[0], 6
    density = spectral_density(model, batch, probes=probes, steps=d, seed=5)
    assert density.products == probes * d + 2  # and the operator's 2-product self-check
    z = rademacher_columns(d, probes, 5)
    lam, vec = ref.eigenvalues, ref.eigenvectors
    threshold = float(lam[4] + lam[5]) / 2
    top = vec[:, :5]
    per_probe = ((top.T @ z) ** 2).sum(0)  # zᵀ P_{λ ≥ t} z
    assert density.count_above(threshold)[0] == pytest.approx(float(per_probe.mean()), rel=1e-8)
    quadratic = (z * (ref.theta @ z)).sum(0)  # SLQ's trace is Hutchinson with its probes
    assert density.trace()[0] == pytest.approx(float(quadratic.mean()), rel=1e-10)
    hist = density.histogram(bins=10, lo=float(lam[-1]) * 0.5)
    assert hist.counts.sum() + hist.below == pytest.approx(d, rel=1e-12)
    assert hist.below == pytest.approx(0.0, abs=1e-12)


def test_slq_trace_count_and_effective_rank_on_a_larger_kernel() -> None:
    model, batch = CASES[3].build(F64)  # GPT-2 tied, D = 384
    ref = specprobe.dense_kernel(model, batch)
    density = spectral_density(model, batch, probes=10, steps=30, seed=1)
    assert density.nodes.shape == (10, 30) and np.allclose(density.weights.sum(1), 1)
    trace, trace_se = density.trace()
    assert abs(trace - ref.chi_net) <= 3 * trace_se
    lam = ref.eigenvalues.numpy()
    p = lam[lam > 0] / ref.chi_net
    exact_rank = float(np.exp(-(p * np.log(p)).sum()))
    dummy = spectrum_of(MatrixOperator(ref.theta), 3)
    summary = summarize_spectrum(dummy, chi_net=ref.chi_net, density=density)
    rank, rank_se = summary["effective_rank"], summary["effective_rank_stderr"]
    assert rank_se > 0 and abs(rank - exact_rank) <= 3 * rank_se + 0.05 * exact_rank
    # The count at a threshold in a spectral gap, where #{λ ≥ t} is well defined. (Not at
    # λ_41: λ_40 … λ_55 are one eigenvalue of multiplicity 16 (equal to 1e-9), so #{λ ≥ λ_41}
    # is 55, or 41 to 55 as rounding falls; SLQ's 54 ± 1.5 over seeds was right, 41 was not.)
    d, t = lam.size, float(np.sqrt(lam[19] * lam[20]))  # λ_20/λ_21 = 1.08: 20 eigenvalues above t
    count, count_se = density.count_above(t)
    # Gauss quadrature brackets each probe's measure (Chebyshev–Markov–Stieltjes): the exact
    # D·qᵀ1{Θ ≥ t}q lies between the SLQ count minus D·τ of the first node above t and plus
    # D·τ of the last node below it. Checked per probe on the same probes, it bounds the
    # quadrature's bias; the rest is Hutchinson's error, within 3σ.
    q = rademacher_columns(d, density.probes, 1) / np.sqrt(d)
    exact = d * ((ref.eigenvectors[:, :20].T @ q) ** 2).sum(0).numpy()
    brackets = [gauss_bracket(density.nodes[p], density.weights[p], t) for p in range(density.probes)]
    for (mass, first_above, last_below), true in zip(brackets, exact, strict=True):
        assert d * (mass - first_above) - 1e-8 * d <= true <= d * (mass + last_below) + 1e-8 * d
    quadrature = d * float(np.mean([max(first_above, last_below) for _, first_above, last_below in brackets]))
    assert abs(count - 20) <= 3 * count_se + quadrature


# ---- traces -------------------------------------------------------------------------------


def test_hutchpp_is_unbiased_and_beats_hutchinson_at_equal_cost() -> None:
    _, _, ref = trained_gpt_neox()
    lam = ref.eigenvalues
    assert float(lam[:8].sum()) / ref.chi_net > 0.6  # top-heavy after training
    op = MatrixOperator(ref.theta)
    rank, probes, seeds = 8, 8, 40
    # Cost in vector–Jacobian products: a product is a vjp and a jvp (≈ 2), a quadratic form 1.
    # Hutch++: rank products + rank quadratic forms + probes quadratic forms = 3·8 + 8 = 32.
    plain_probes = 3 * rank + probes
    hpp, plain = [], []
    for seed in range(seeds):
        estimate = deflated_trace(op, rank=rank, probes=probes, seed=seed)
        hpp.append(estimate.trace)
        z = rademacher_columns(op.num_outputs, plain_probes, seed + 1000)
        plain.append(float(op.quadratic_form(z).mean()))
    assert estimate.products == rank and estimate.quadratic_forms == rank + probes
    hpp_arr, plain_arr = np.array(hpp), np.array(plain)
    assert abs(hpp_arr.mean() - ref.chi_net) <= 3 * hpp_arr.std(ddof=1) / np.sqrt(seeds)
    assert abs(plain_arr.mean() - ref.chi_net) <= 3 * plain_arr.std(ddof=1) / np.sqrt(seeds)
    assert hpp_arr.std() < 0.75 * plain_arr.std()  # 0.55 here
    # One estimate's standard error describes the spread across seeds.
    reported = np.mean([deflated_trace(op, rank=rank, probes=probes, seed=s).stderr for s in range(seeds)])
    assert 0.5 <= reported / hpp_arr.std(ddof=1) <= 2.0


def test_deflated_trace_through_the_operator_and_a_spectrum_basis() -> None:
    model, batch, ref = trained_gpt_neox()
    op = NTKOperator(model, batch)
    with op:
        result = spectrum_of(op, 8, tol=1e-8, return_eigenvectors=True, trace_probes=16)
        assert result.eigenvectors is not None
        exact = deflated_trace(op, basis=result.eigenvectors, probes=16, seed=0)
        sketched = deflated_trace(op, rank=8, probes=16, seed=0)
    # The spectrum's trace is the deflated estimate over its own eigenvectors; its exact part
    # is the sum of the Ritz values (free), equal to Σ‖Jᵀv_k‖² up to the Ritz residuals.
    assert result.trace == pytest.approx(exact.trace, rel=1e-7)
    assert result.quadratic_forms == 16
    assert exact.exact_part == pytest.approx(float(ref.eigenvalues[:8].sum()), rel=1e-7)
    matrix = deflated_trace(MatrixOperator(ref.theta), rank=8, probes=16, seed=0)
    # Same probes (Ω and z), so the same numbers up to the products' rounding, and that is
    # float32's: GPT-NeoX's eager attention takes its softmax in float32 even in a float64
    # model, so J·w and Jᵀz carry relative errors of order ε₃₂ = 1.2e-7 that depend on the
    # cotangents (the probes here, one-hot rows in the dense reference's jacrev). Measured:
    # quadratic forms within 0.7·ε₃₂, the sketch's products within 1.1·ε₃₂; the trace, a sum
    # of positive quadratic forms over a basis that moves only at that order, within
    # 0.27·ε₃₂ over seeds 0..3 (with the softmax patched to float64: 6e-16).
    assert sketched.trace == pytest.approx(matrix.trace, rel=2 * torch.finfo(torch.float32).eps)
    for estimate in (exact, sketched):
        assert abs(estimate.trace - ref.chi_net) <= 4 * estimate.stderr
    json.dumps(exact.to_dict())


# ---- summaries ----------------------------------------------------------------------------


def test_summary_is_json_ready_and_consistent() -> None:
    model, batch = CASES[2].build(F64)
    ref = specprobe.dense_kernel(model, batch)
    op = NTKOperator(model, batch)
    with op:
        result = spectrum_of(op, 5, tol=1e-8)
        density = spectral_density_of(op, probes=4, steps=10)
    summary = summarize_spectrum(result, chi_net=ref.chi_net, chi_pos=ref.spectral_position, density=density)
    text = json.dumps(summary)
    assert "NaN" not in text
    expected_keys = {
        "spectrum_method", "spectrum_k", "spectrum_num_outputs", "spectrum_products",
        "spectrum_converged", "spectrum_num_converged", "spectrum_stopped_by", "spectrum_tol", "spectrum_trace", "spectrum_trace_source",
        "top_eigenvalues", "top_eigenvalue_residuals", "top_eigenvalue_fractions", "top_overlaps",
        "captured_residual_mass", "position_threshold", "position_index",
        "position_index_is_estimate", "position_index_stderr", "position_index_lower_bound",
        "effective_rank", "effective_rank_stderr", "power_law_alpha", "power_law_r2",
    }  # fmt: skip
    assert set(summary) == expected_keys
    lam = ref.eigenvalues[:5].numpy()
    assert np.allclose(summary["top_eigenvalue_fractions"], lam / ref.chi_net, rtol=1e-6)
    assert summary["captured_residual_mass"] == pytest.approx(float(ref.overlaps[:5].sum()), rel=1e-6)
    assert summary["spectrum_num_outputs"] == 384
    json.dumps(result.to_dict())
    json.dumps(density.to_dict())
    json.dumps(density.histogram().to_dict())


def test_power_law_fit() -> None:
    k = np.arange(1, 21)
    alpha, r2 = power_law_fit(3.0 * k**-1.3)
    assert alpha == pytest.approx(1.3, rel=1e-12) and r2 == pytest.approx(1.0, abs=1e-12)
    noisy = 3.0 * k**-0.7 * np.exp(0.3 * np.random.default_rng(0).standard_normal(20))
    alpha, r2 = power_law_fit(noisy)
    assert alpha is not None and r2 is not None and 0.4 < alpha < 1.0 and r2 < 0.99
    assert power_law_fit([1.0, 0.0, 0.0]) == (None, None)


# ---- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, r"expected 1 <= k <= D=14"),
        ({"k": 15}, r"expected 1 <= k <= D=14"),
        ({"tol": 0.0}, "expected tol > 0"),
        ({"max_products": 2}, "max_products >= k=3"),
        ({"method": "lanczoz"}, "unknown eigen method 'lanczoz'; expected one of: lanczos, lobpcg, dense"),
        ({"trace_probes": 1}, "trace_probes = 0 or >= 2"),
        ({"method": "lobpcg", "block_size": 2}, "LOBPCG block of at least k=3"),
    ],
)
def test_bad_settings(kwargs: dict, message: str) -> None:
    model, batch = CASES[0].build(F64)
    settings = {"k": 3, **kwargs}
    with pytest.raises(specprobe.SpecprobeError, match=message):
        spectrum(model, batch, **settings)


def test_bad_slq_and_trace_settings() -> None:
    model, batch = CASES[0].build(F64)
    op = NTKOperator(model, batch)
    with pytest.raises(specprobe.SpecprobeError, match="probes >= 2"):
        spectral_density_of(op, probes=1)
    with pytest.raises(specprobe.SpecprobeError, match="at least 2 probes"):
        deflated_trace(op, probes=1)
    with pytest.raises(specprobe.SpecprobeError, match="1 <= rank < D=14"):
        deflated_trace(op, rank=14)
    with pytest.raises(specprobe.SpecprobeError, match=r"basis of shape \(D=14, r\)"):
        deflated_trace(op, basis=torch.zeros(13, 2))


def test_the_report_says_when_eigenpairs_did_not_converge() -> None:
    from specprobe.report.tables import run_notes
    from tests.analysis.test_family import record

    spectrum = {
        "spectrum_converged": False,
        "spectrum_num_converged": 3,
        "spectrum_k": 5,
        "spectrum_stopped_by": "products",
        "spectrum_tol": 1e-6,
    }
    notes = [text for _, text in run_notes([record("m", 10, 1.0, params=1000, spectrum=spectrum)])]
    assert any(
        "3 of 5 eigenpairs converged to tol 1e-06 (it stopped at its budget of products)" in n for n in notes
    )
    done = {**spectrum, "spectrum_converged": True, "spectrum_num_converged": 5}
    assert not any(
        "eigenpairs" in text for _, text in run_notes([record("m", 10, 1.0, params=1000, spectrum=done)])
    )

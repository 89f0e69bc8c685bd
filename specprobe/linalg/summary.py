"""Spectrum summaries as record fields: :func:`summarize_spectrum`, :func:`spectral_record`, :func:`power_law_fit`.

Pure functions of a :class:`~specprobe.linalg.spectrum.Spectrum` (and optionally a
:class:`~specprobe.linalg.density.SpectralDensity`), except :func:`spectral_record`, which
runs both on a model and a batch. The fields are plain JSON-ready dicts (the results
record's TypedDict lives in ``specprobe.store``, a layer above).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from specprobe.core.operator import NTKOperator
from specprobe.linalg.density import SpectralDensity, spectral_density_of
from specprobe.linalg.fit import power_law
from specprobe.linalg.numerics import finite, floats
from specprobe.linalg.spectrum import EigenMethod, Spectrum, spectrum_of


def summarize_spectrum(
    spectrum: Spectrum,
    *,
    chi_net: float | None = None,
    chi_pos: float | None = None,
    density: SpectralDensity | None = None,
) -> dict[str, Any]:
    """Spectrum summaries (the derived quantities of the decomposition) as a JSON-ready dict.

    Pure: no products. ``chi_net`` and ``chi_pos`` come from :func:`specprobe.measure` on the
    same batch and parameters; TrΘ is ``chi_net`` if given, else ``spectrum.trace``, else
    the SLQ estimate of ``density``. A value that cannot be computed from what is given is
    None.

    Keys:
        spectrum_method, spectrum_k, spectrum_num_outputs, spectrum_products: how the
            spectrum was obtained: method, K eigenpairs, D, columns of Θ·U used.
        spectrum_converged: every top-K pair has Ritz residual ≤ tol;
            spectrum_num_converged: how many have.
        spectrum_stopped_by, spectrum_tol: why the solve stopped
            (:attr:`~specprobe.linalg.spectrum.Spectrum.stopped_by`) and its tolerance.
        spectrum_trace: the TrΘ used below; spectrum_trace_source: "chi_net",
            "spectrum" or "density".
        top_eigenvalues: λ_1 ≥ … ≥ λ_K.
        top_eigenvalue_residuals: their Ritz residuals ‖Θv − λv‖/λ.
        top_eigenvalue_fractions: λ_k / TrΘ.
        top_overlaps: q_k = (v_k·g)²/‖g‖², the share of the loss residual in mode k.
        captured_residual_mass: Σ_{k≤K} q_k, the share of ‖g‖² in the top-K eigenspace.
        position_threshold: χ_pos·TrΘ = gᵀΘg/‖g‖², the eigenvalue at the spectral position.
        position_index: #{k : λ_k ≥ χ_pos·TrΘ}, how deep into the spectrum learning acts.
            Counted from the top-K eigenvalues when the threshold lies inside them (λ_K <
            threshold); otherwise max(K, SLQ count of eigenvalues ≥ threshold), and None
            without a density.
        position_index_is_estimate: False only when counted from converged top-K pairs.
        position_index_stderr: SLQ standard error of the count (0 when counted exactly).
        position_index_lower_bound: K when the threshold lies beyond the top K, else the
            index itself.
        effective_rank: exp(H), H = −Σ_k (λ_k/T) log(λ_k/T) over all D eigenvalues, T =
            TrΘ, estimated by SLQ as Tr f(Θ) with f(λ) = −(λ/T) log(λ/T); needs a density.
        effective_rank_stderr: its standard error, exp(H)·se(H).
        power_law_alpha, power_law_r2: least-squares fit of log λ_k = c − α log k over the
            positive top-K eigenvalues (at least 3), and its R² in log space.
    """
    lam = spectrum.eigenvalues.astype(np.float64)
    trace, source = _trace_and_source(spectrum, chi_net, density)
    record: dict[str, Any] = {
        "spectrum_method": spectrum.method,
        "spectrum_k": spectrum.k,
        "spectrum_num_outputs": spectrum.num_outputs,
        "spectrum_products": spectrum.products,
        "spectrum_converged": spectrum.all_converged,
        "spectrum_num_converged": spectrum.num_converged,
        "spectrum_stopped_by": spectrum.stopped_by,
        "spectrum_tol": spectrum.tol,
        "spectrum_trace": trace,
        "spectrum_trace_source": source,
        "top_eigenvalues": floats(lam),
        "top_eigenvalue_residuals": floats(spectrum.residuals),
        "top_eigenvalue_fractions": floats(lam / trace) if trace else None,
        "top_overlaps": floats(spectrum.overlaps),
        "captured_residual_mass": finite(spectrum.captured_residual_mass),
    }
    threshold = float(chi_pos) * trace if chi_pos is not None and trace is not None else None
    record.update(_position_index(spectrum, threshold, density))
    effective_rank, effective_rank_stderr = _effective_rank(density, trace)
    record.update(effective_rank=effective_rank, effective_rank_stderr=effective_rank_stderr)
    alpha, r2 = power_law_fit(lam)
    record.update(power_law_alpha=alpha, power_law_r2=r2)
    return record


def _trace_and_source(
    spectrum: Spectrum, chi_net: float | None, density: SpectralDensity | None
) -> tuple[float | None, str | None]:
    """TrΘ and where it came from: ``chi_net`` if given, else the spectrum's, else SLQ's."""
    if chi_net is not None:
        return float(chi_net), "chi_net"
    if spectrum.trace is not None:
        return float(spectrum.trace), "spectrum"
    if density is not None:
        return density.trace()[0], "density"
    return None, None


def _position_index(
    spectrum: Spectrum, threshold: float | None, density: SpectralDensity | None
) -> dict[str, Any]:
    """The position_* fields of :func:`summarize_spectrum` for the threshold χ_pos·TrΘ."""
    lam = spectrum.eigenvalues.astype(np.float64)
    k = spectrum.k
    index: int | float | None = None
    is_estimate = True
    index_stderr: float | None = None
    lower_bound: int | None = None
    if threshold is not None:
        if lam[-1] < threshold:
            index = int((lam >= threshold).sum())
            # Exact when the pairs that decide the count (up to the first one below) converged.
            is_estimate = not bool(spectrum.converged[: min(index + 1, k)].all())
            index_stderr = 0.0
            lower_bound = index
        else:
            lower_bound = k
            if density is not None:
                count, count_se = density.count_above(threshold)
                index, index_stderr = max(float(k), count), count_se
    return {
        "position_threshold": threshold,
        "position_index": index,
        "position_index_is_estimate": is_estimate,
        "position_index_stderr": index_stderr,
        "position_index_lower_bound": lower_bound,
    }


def _effective_rank(
    density: SpectralDensity | None, trace: float | None
) -> tuple[float | None, float | None]:
    """exp(H) and exp(H)·se(H) by SLQ, H = −Σ (λ/T) log(λ/T); (None, None) without a density or trace."""
    if density is None or not trace:
        return None, None
    total = trace

    def entropy_term(x: np.ndarray) -> np.ndarray:
        p = np.clip(x, 0.0, None) / total
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)

    entropy, entropy_se = density.trace_of(entropy_term)
    effective_rank = math.exp(entropy)
    return effective_rank, effective_rank * entropy_se


def power_law_fit(eigenvalues: np.ndarray | Sequence[float]) -> tuple[float | None, float | None]:
    """The decay α and R² of λ_k ≈ c·k^−α over the positive λ_k (k from 1): α is −exponent
    of :func:`specprobe.linalg.fit.power_law` of λ_k on k.

    Returns (None, None) with fewer than 3 positive eigenvalues.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    ranks = np.arange(1, lam.size + 1, dtype=np.float64)
    ok = lam > 0
    if ok.sum() < 3:
        return None, None
    fit = power_law(ranks[ok], lam[ok])
    return -fit.exponent, fit.r_squared


def spectral_record(
    model: nn.Module,
    batch: Any,
    *,
    k: int,
    chi_net: float,
    chi_pos: float,
    density: bool = False,
    method: EigenMethod | str = EigenMethod.LANCZOS,
    adapter: Any = None,
    params: Sequence[str] | str | None = None,
    micro_batch_size: int | None = None,
    trace_probes: int = 32,
    seed: int = 0,
    tol: float = 1e-6,
) -> dict[str, Any]:
    """The spectral fields of a results record for one batch (as analyze writes them).

    Runs :func:`spectrum_of` for the top ``k`` pairs (with a deflated trace estimate from
    ``trace_probes`` probes over the Ritz vectors), optionally :func:`spectral_density_of`,
    and returns :func:`summarize_spectrum`'s dict plus ``deflated_trace``,
    ``deflated_trace_stderr``, ``spectrum_time_s`` and, with ``density``,
    ``spectral_density`` (a log-spaced histogram: ``edges``, ``counts``, ``below``).
    ``chi_net`` and ``chi_pos`` are the measurement's on the same batch and parameters.
    """
    start = time.perf_counter()
    op = NTKOperator(model, batch, adapter=adapter, params=params, micro_batch_size=micro_batch_size)
    with op:
        spec = spectrum_of(
            op, k=min(k, op.shape[0]), method=method, tol=tol, seed=seed, trace_probes=trace_probes
        )
        slq = spectral_density_of(op, seed=seed) if density else None
    out = summarize_spectrum(spec, chi_net=chi_net, chi_pos=chi_pos, density=slq)
    out["deflated_trace"] = spec.trace
    out["deflated_trace_stderr"] = spec.trace_stderr
    out["spectrum_time_s"] = time.perf_counter() - start
    if slq is not None:
        out["spectral_density"] = slq.histogram().to_dict()
    return out

"""The family view on hand-made records: reach, compute, amplification, fits, verdict."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from specprobe.analysis.family import (
    Outcome,
    Position,
    amplification,
    fit_loss_vs_size,
    fit_power_law,
    fit_reach_vs_size,
    position_vs_compute,
    spectral_reach,
    summarize,
    training_compute,
    verdict,
)
from specprobe.errors import SpecprobeError

D = 1000
TOKENS_PER_STEP = 4096


def record(
    model: str,
    step: int,
    position: float,
    *,
    params: int,
    loss: float = 3.0,
    chi_net: float = 1e6,
    se: float = 0.01,
    num_outputs: int = D,
    **extra: Any,
) -> dict[str, Any]:
    """A record as run_sweep writes it (the fields the family view reads)."""
    return {
        "model": model,
        "label": model.upper(),
        "revision": f"checkpoint-{step}",
        "step": step,
        "tokens_seen": step * TOKENS_PER_STEP,
        "num_params": params,
        "status": "ok",
        "duplicate_of": None,
        "loss": loss,
        "loss_stderr": 0.001,
        "chi_net": chi_net,
        "chi_net_stderr": chi_net * 0.01,
        "spectral_position": position / num_outputs,
        "spectral_position_stderr": se / num_outputs,
        "normalized_position": position,
        "normalized_position_stderr": se,
        "num_outputs": num_outputs,
        **extra,
    }


SIZES = {"s": 1_000, "m": 10_000, "l": 100_000, "xl": 1_000_000}
STEPS = (10, 100, 1000)


def power_law_family(reach_exponent: float = -0.2, falls: bool = True) -> list[dict[str, Any]]:
    """Exact power laws across sizes: final loss 5·N^-0.1, reach 2·N^reach_exponent.

    Each model's position goes from 3 (first) through 1.5·reach to its reach (last) when
    ``falls``; otherwise it rises from its reach (first) to 2·reach. χ_net grows ×4.
    """
    out = []
    for model, n in SIZES.items():
        reach = 2.0 * n**reach_exponent
        positions = [3.0, 1.5 * reach, reach] if falls else [reach, 1.5 * reach, 2.0 * reach]
        losses = [6.0, 5.5, 5.0 * n**-0.1]
        for step, pos, loss, chi in zip(STEPS, positions, losses, (1e6, 2e6, 4e6), strict=True):
            out.append(record(model, step, pos, params=n, loss=loss, chi_net=chi * n))
    return out


def test_fits_are_exact_on_power_laws() -> None:
    records = power_law_family()
    loss = fit_loss_vs_size(records)
    assert loss.exponent == pytest.approx(-0.1, abs=1e-12)
    assert loss.prefactor == pytest.approx(5.0, rel=1e-10)
    assert loss.r_squared == pytest.approx(1.0, abs=1e-12)
    assert loss.num_points == 4 and loss.sizes == tuple(SIZES.values())
    reach = fit_reach_vs_size(records)
    assert reach.exponent == pytest.approx(-0.2, abs=1e-12)
    assert reach.prefactor == pytest.approx(2.0, rel=1e-10)
    assert reach.predict(1e4) == pytest.approx(2.0 * 1e4**-0.2)
    # The raw χ_pos differs by the constant D: same exponent, prefactor / D.
    raw = fit_reach_vs_size(records, Position.RAW)
    assert raw.exponent == pytest.approx(-0.2, abs=1e-12)
    assert raw.prefactor == pytest.approx(2.0 / D, rel=1e-10)


def test_fit_statistics_on_noisy_points() -> None:
    fit = fit_power_law([1, 10, 100, 1000], [1.0, 0.5, 0.3, 0.1], "y")
    assert -0.5 < fit.exponent < -0.2
    assert 0.9 < fit.r_squared < 1.0
    assert fit.exponent_stderr > 0


@pytest.mark.parametrize(
    ("sizes", "values", "message"),
    [
        ([1e3, 1e4], [1.0, 0.5], "at least 3 model sizes, found 2"),
        ([1e3, 1e3, 1e4], [1.0, 0.9, 0.5], "found 2"),
        ([1e3, 1e4, 1e5], [1.0, 0.0, 0.5], "positive sizes and values"),
    ],
)
def test_fit_refuses(sizes: list[float], values: list[float], message: str) -> None:
    with pytest.raises(SpecprobeError, match=message) as info:
        fit_power_law(sizes, values, "y")
    assert info.value.hint


def test_fit_refuses_below_three_models() -> None:
    records = [r for r in power_law_family() if r["model"] in ("s", "m")]
    with pytest.raises(SpecprobeError, match="at least 3"):
        fit_loss_vs_size(records)
    summary = summarize(records)
    assert summary.loss_fit is None and summary.reach_fit is None
    assert "at least 3" in summary.notes[0]


def test_reach_is_the_lowest_analysed_position_ranked_by_size() -> None:
    records = [
        record("big", 10, 2.0, params=500),
        record("big", 20, 0.7, params=500, se=0.05),
        record("big", 40, 0.9, params=500),
        # A duplicate and a failed revision never count, however low.
        record("big", 80, 0.1, params=500, duplicate_of="checkpoint-10"),
        {**record("big", 160, 0.05, params=500), "status": "failed"},
        record("small", 20, 1.2, params=100),
        record("small", 10, 1.5, params=100),
        {"model": "broken", "revision": "main", "status": "failed", "step": None},
    ]
    reaches = spectral_reach(records)
    assert [r.model for r in reaches] == ["small", "big"]  # by size, not by record order
    small, big = reaches
    assert (big.reach, big.reach_stderr, big.revision, big.step) == (0.7, 0.05, "checkpoint-20", 20)
    assert big.spectral_position == pytest.approx(0.7 / D)
    assert big.num_revisions == 3 and big.final_revision == "checkpoint-40"
    assert (small.reach, small.revision, small.num_revisions) == (1.2, "checkpoint-20", 2)
    assert small.label == "SMALL"
    json.dumps([r.to_dict() for r in reaches])


def test_position_against_compute() -> None:
    records = [record("m", 0, 3.0, params=200), record("m", 10, 2.0, params=200)]
    records.append({**record("m", 20, 1.0, params=200), "tokens_seen": None})
    (series,) = position_vs_compute(records)
    assert [p.compute for p in series.points] == [0.0, 6 * 200 * 10 * TOKENS_PER_STEP, None]
    assert [p.position for p in series.points] == [3.0, 2.0, 1.0]
    assert training_compute(None, 10) is None and training_compute(7, 3) == 126.0


def test_raw_position_needs_equal_outputs() -> None:
    records = [record("a", 1, 1.0, params=10), record("b", 1, 1.0, params=20, num_outputs=2 * D)]
    assert len(spectral_reach(records)) == 2  # D·χ_pos compares across D
    with pytest.raises(SpecprobeError, match="only at equal D"):
        spectral_reach(records, "spectral_position")


def test_amplification_is_relative_to_the_first_revision() -> None:
    records = [record("m", s, 1.0, params=10, chi_net=c) for s, c in ((40, 8.0), (10, 2.0), (20, 3.0))]
    (series,) = amplification(records)
    assert series.reference_revision == "checkpoint-10"
    assert [p.amplification for p in series.points] == [1.0, 1.5, 4.0]
    assert series.points[0].amplification_stderr == 0.0
    assert series.points[2].amplification_stderr == pytest.approx(4.0 * math.sqrt(2) * 0.01)


def test_verdict_supports_both_findings_on_supportive_data() -> None:
    result = verdict(power_law_family())
    outcomes = {c.name: c.outcome for c in result.claims}
    assert outcomes == {
        "position_falls": Outcome.SUPPORTED,
        "reach_grows_with_size": Outcome.SUPPORTED,
        "loss_falls_with_size": Outcome.SUPPORTED,
        "chi_net_grows": Outcome.SUPPORTED,
    }
    text = result.text
    assert text.startswith("Across 4 models (1k–1M parameters)")
    assert "position fell in 4 of 4 models" in text
    assert "larger models reach lower positions (lowest D·χ_pos): yes" in text
    assert "fit ∝ N^-0.20 ± 0.00, R² 1.00" in text
    assert "χ_net grew in 4 of 4 models (×4 from first to last revision)" in text
    assert text.endswith("Both findings of the spectral-reach account hold on these records.")


def test_verdict_says_so_when_the_data_contradict() -> None:
    # Positions rise during training, and larger models reach *higher* positions.
    result = verdict(power_law_family(reach_exponent=0.2, falls=False))
    assert result.claim("position_falls").outcome is Outcome.CONTRADICTED
    assert result.claim("reach_grows_with_size").outcome is Outcome.CONTRADICTED
    assert "position fell in 0 of 4 models" in result.text and "rose in 4" in result.text
    assert "lowest D·χ_pos): no, the reverse (S 7.96 ± 0.01" in result.text
    assert "contradict a falling position and a reach that grows with size" in result.text
    assert "Both findings" not in result.text


def test_verdict_is_honest_about_noise_and_missing_data() -> None:
    # Differences well inside 2 combined standard errors: neither claim is established.
    noisy = [
        record(m, s, p, params=n, se=0.5)
        for m, n, ps in (("a", 100, (1.0, 0.9)), ("b", 1000, (1.0, 0.95)), ("c", 10_000, (1.1, 0.8)))
        for s, p in zip((10, 100), ps, strict=True)
    ]
    result = verdict(noisy)
    assert result.claim("position_falls").outcome is Outcome.UNCLEAR
    assert "position fell in 0 of 3 models" in result.text
    reach = result.claim("reach_grows_with_size")
    assert reach.outcome is Outcome.UNCLEAR and not reach.evidence_against
    assert reach.summary.startswith(
        "larger models reach lower positions (lowest D·χ_pos): not shown beyond the noise "
        "(B above A by less than 2 standard errors; C below B by less than 2 standard errors: "
    )
    assert result.text.endswith(
        "These records do not establish a falling position or a reach that grows with size beyond the noise."
    )
    # One revision of one model: nothing to test, and it says so.
    single = verdict([record("a", 10, 1.0, params=100)])
    assert all(c.outcome is Outcome.UNTESTABLE for c in single.claims[:2])
    assert "Too little data to test a falling position or a reach that grows with size." in single.text
    assert "Nothing to judge" in verdict([{"model": "x", "status": "failed"}]).text


def test_verdict_on_a_mixed_family() -> None:
    # Positions fall everywhere, but the middle model reaches significantly higher than the
    # smallest, and the largest lies within the noise of the middle one: not supported.
    mixed = [
        record(m, s, p, params=n, se=0.02)
        for m, n, ps in (("a", 100, (4.0, 0.30)), ("b", 1000, (5.0, 0.43)), ("c", 10_000, (4.5, 0.40)))
        for s, p in zip((10, 100), ps, strict=True)
    ]
    result = verdict(mixed)
    assert result.claim("position_falls").outcome is Outcome.SUPPORTED
    reach = result.claim("reach_grows_with_size")
    assert reach.outcome is Outcome.UNCLEAR and reach.evidence_against
    assert reach.summary.startswith(
        "larger models reach lower positions (lowest D·χ_pos): not in order (B above A beyond 2 standard "
        "errors; C below B by less than 2 standard errors: A 0.3 ± 0.02, B 0.43 ± 0.02, C 0.4 ± 0.02; "
        "fit ∝ N^0.06"
    )
    assert result.text.endswith(
        "These records do not support a reach that grows with size: a comparison goes the other way "
        "beyond the noise, though not all of them."
    )


def test_summary_is_json_ready() -> None:
    summary = summarize(power_law_family())
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["position"] == "normalized_position"
    assert [r["model"] for r in data["reach"]] == list(SIZES)
    assert data["loss_fit"]["exponent"] == pytest.approx(-0.1)
    assert data["verdict"]["claims"][0]["outcome"] == "supported"
    assert len(data["series"][0]["points"]) == len(STEPS)


def test_verdict_judges_the_summarys_own_fits() -> None:
    # One model without a size: the summary makes no fit (and says why), and the verdict,
    # which judges the summary's numbers, quotes none either.
    records = [
        {k: v for k, v in r.items() if k != "num_params"} if r["model"] == "s" else r
        for r in power_law_family()
    ]
    summary = summarize(records)
    assert summary.loss_fit is None and summary.reach_fit is None
    assert "needs num_params for every model" in summary.notes[0]
    assert "fit ∝" not in summary.verdict.text
    assert summary.verdict == verdict(records)
    assert summary.verdict.claim("reach_grows_with_size").outcome is Outcome.SUPPORTED

"""The family view on the population position (issue 18): chosen once when every record
carries it, D·χ_pos for older records; reach that leaves out estimates ≤ 0 and flags noisy
ones; the bias of a minimum over noisy revisions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from specprobe.analysis.family import Outcome, Position, spectral_reach, summarize
from specprobe.analysis.position import choose_position, population_problem
from specprobe.analysis.reach import position_at_loss, position_at_step, reach_values
from specprobe.analysis.sizes import expected_max_normal, minimum_bias
from tests.analysis.test_family import SIZES, STEPS, record


def population(r: dict[str, Any], value: float, se: float = 0.01, **extra: Any) -> dict[str, Any]:
    """``r`` with the population fields of issue 18's contract (normalised value ``value``)."""
    r.update(
        normalized_population_position=value,
        normalized_population_position_stderr=se,
        population_position=value / 100.0,
        population_position_stderr=se / 100.0,
        noise_scale=25.0,
        noise_scale_stderr=3.0,
        noise_scale_tokens=25.0 * 63,
        population_status="ok",
        sequences_needed=40,
        **extra,
    )
    return r


def crossed_family() -> list[dict[str, Any]]:
    """D·χ_pos rises with size (batches dominated by gradient noise) while the population
    position falls with size: the two statistics give opposite verdicts."""
    out = []
    for i, (model, n) in enumerate(SIZES.items()):
        for j, step in enumerate(STEPS):
            batches = 1.0 + 0.5 * i + 0.1 * (2 - j)
            out.append(
                population(record(model, step, batches, params=n), 3.0 * (0.5**i) * (1.0 + 0.2 * (2 - j)))
            )
    return out


def test_population_position_is_chosen_when_every_record_has_it() -> None:
    records = crossed_family()
    assert choose_position(records) is Position.POPULATION
    summary = summarize(records)
    assert summary.position is Position.POPULATION
    assert "population position (D/N)·χ_pos^∞" in summary.statistic
    assert "same tokenizer and sequence length" in summary.statistic
    reach = summary.reach
    assert [r.reach for r in reach] == pytest.approx([3.0 * 0.5**i for i in range(4)])
    assert [r.noise_scale for r in reach] == [25.0] * 4 and reach[0].noise_scale_tokens == 25.0 * 63
    assert summary.verdict.claim("reach_grows_with_size").outcome is Outcome.SUPPORTED
    assert "(D/N)·χ_pos^∞" in summary.verdict.opening
    # The same records judged on today's statistic: the reverse.
    old = summarize(records, Position.NORMALIZED)
    assert old.verdict.claim("reach_grows_with_size").outcome is Outcome.CONTRADICTED


def test_older_or_mixed_records_use_d_chi_pos_and_say_so() -> None:
    records = crossed_family()
    for r in records[:2]:  # records written by an earlier version: no population fields
        for key in [k for k in r if "population" in k or "noise_scale" in k or k == "sequences_needed"]:
            del r[key]
    assert choose_position(records) is Position.NORMALIZED
    summary = summarize(records)
    assert summary.position is Position.NORMALIZED and "D·χ_pos, the mean over" in summary.statistic
    assert summary.reach[0].reach == pytest.approx(
        min(r["normalized_position"] for r in records if r["model"] == "s")
    )


def test_reach_statistics_follow_the_chosen_scale() -> None:
    records = crossed_family()
    by_model = {v.model: v.value for v in position_at_step(records, 100)}
    assert by_model["m"] == pytest.approx(3.0 * 0.5 * 1.2)
    finals = reach_values(records, "final")
    assert [v.value for v in finals] == pytest.approx([3.0 * 0.5**i for i in range(4)])
    # Equal loss: every model's loss is 3 at every step, so the first revision is taken.
    assert [v.value for v in position_at_loss(records)] == pytest.approx(
        [3.0 * 0.5**i * 1.4 for i in range(4)]
    )


def test_reach_leaves_out_estimates_at_or_below_zero_and_flags_noisy_ones() -> None:
    records = crossed_family()
    s_rows = [r for r in records if r["model"] == "s"]
    s_rows[2].update(
        normalized_population_position=-0.4, population_status="nonpositive", sequences_needed=900
    )
    s_rows[1].update(population_status="noisy", sequences_needed=300)
    assert population_problem(s_rows[2]) == "≤ 0: ~900 sequences needed"
    assert population_problem(s_rows[1]) == "noisy: ~300 sequences needed"
    summary = summarize(records)
    small = summary.reach[0]
    assert small.reach == pytest.approx(3.0 * 1.2) and small.revision == "checkpoint-100"
    assert small.excluded == 1 and small.problem == "noisy: ~300 sequences needed"
    notes = " ".join(summary.notes)
    assert "left out of its reach: population estimate ≤ 0 (more sequences needed)" in notes
    assert "rests on a population estimate that is noisy: ~300 sequences needed" in notes
    assert all(r.reach > 0 for r in spectral_reach(records))


def test_expected_maximum_of_normals_and_the_bias_of_a_minimum() -> None:
    assert expected_max_normal(1) == 0.0
    assert expected_max_normal(2) == pytest.approx(1 / math.sqrt(math.pi), abs=1e-6)
    assert expected_max_normal(3) == pytest.approx(1.5 / math.sqrt(math.pi), abs=1e-6)
    draws = np.random.default_rng(0).standard_normal((200_000, 5)).max(axis=1).mean()
    assert expected_max_normal(5) == pytest.approx(draws, abs=0.01)
    # The minimum of k equal true values measured with error σ lies σ·E[max] below them.
    rng = np.random.default_rng(1)
    lows = (1.0 + 0.1 * rng.standard_normal((100_000, 3))).min(axis=1)
    assert 1.0 - lows.mean() == pytest.approx(minimum_bias([0.1, 0.1, 0.1]), abs=0.002)
    assert minimum_bias([0.1, 0.1, 0.1], [1.0, 1.1, 1.05]) == minimum_bias([0.1, 0.1, 0.1])
    assert minimum_bias([0.1, 0.1, 0.1], [1.0, 1.1, 9.0]) == pytest.approx(0.1 * expected_max_normal(2))
    summary = summarize(crossed_family())  # a clear minimum: one candidate, no bias
    assert summary.reach[0].minimum_bias == 0.0
    flat = crossed_family()
    for r in flat[: len(STEPS)]:  # the first model's revisions equal within their errors
        r["normalized_population_position"] = 1.0
    summary = summarize(flat)
    assert summary.reach[0].minimum_bias == pytest.approx(0.01 * expected_max_normal(len(STEPS)))
    assert any("σ·E[max of k normals]" in note for note in summary.notes)


def test_verdict_is_a_list_of_claims_with_their_numbers() -> None:
    verdict = summarize(crossed_family()).verdict
    lines = verdict.lines
    assert lines[0] == f"{verdict.opening}:" and lines[-1] == verdict.closing
    assert len(lines) == len(verdict.claims) + 2
    for line, claim in zip(lines[1:-1], verdict.claims, strict=True):
        assert line == f"{claim.outcome.value}: {claim.summary}"
    assert "±" in lines[2]  # the reach claim carries its values and errors


def test_a_nonpositive_estimate_keeps_the_population_scale() -> None:
    """measure writes a ‖M‖²^ ≤ 0 estimate as its value ≤ 0 with the status "nonpositive"
    (no noise scale): the run stays on the population position, that revision is left out
    of the reach, and the whole report still builds."""
    from specprobe.report.document import build_document

    records = crossed_family()
    low = records[len(STEPS) - 1]  # the first model's last revision, its reach otherwise
    low.update(
        normalized_population_position=-0.4,
        population_position=-0.004,
        noise_scale=None,
        noise_scale_stderr=None,
        noise_scale_tokens=None,
        population_status="nonpositive",
        sequences_needed=900,
    )
    assert choose_position(records) is Position.POPULATION
    summary = summarize(records)
    assert summary.reach[0].reach == pytest.approx(3.0 * 1.2)  # the revisions with an estimate
    build_document(records)

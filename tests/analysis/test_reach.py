"""Reach statistics at equal loss, equal compute and by position index, on hand-made records."""

from __future__ import annotations

import math
from typing import Any

import pytest

from specprobe.analysis.family import Outcome
from specprobe.analysis.reach import (
    STATISTICS,
    common_compute,
    common_loss,
    judge,
    position_at_compute,
    position_at_loss,
    position_at_step,
    position_index,
    reach_values,
)
from specprobe.errors import SpecprobeError


def record(
    model: str, n: int, step: int, loss: float, pos: float, se: float = 0.01, **extra: Any
) -> dict[str, Any]:
    d = 100
    return {
        "model": model,
        "label": model,
        "num_params": n,
        "status": "ok",
        "revision": f"step{step}",
        "step": step,
        "tokens_seen": step * 10,
        "num_outputs": d,
        "loss": loss,
        "loss_stderr": 0.0,
        "chi_net": 1.0,
        "spectral_position": pos / d,
        "spectral_position_stderr": se / d,
        **extra,
    }


# Two models: the small one bottoms out at loss 2.0, the large one passes 2.0 between steps 2 and 4.
RECORDS = [
    record("small", 100, 1, 4.0, 8.0),
    record("small", 100, 2, 3.0, 4.0),
    record("small", 100, 4, 2.0, 2.0, se=0.1),
    record("large", 1000, 1, 3.0, 6.0),
    record("large", 1000, 2, 2.5, 5.0, se=0.2),
    record("large", 1000, 4, 1.6, 1.0, se=0.3),
]


def test_equal_loss_interpolates_in_log_log() -> None:
    assert common_loss(RECORDS) == 2.0  # the highest of the lowest losses: the small model's best
    small, large = position_at_loss(RECORDS)
    assert (small.value, small.stderr, small.where) == (2.0, 0.1, "step4")
    t = math.log(2.5 / 2.0) / math.log(2.5 / 1.6)
    assert large.value == pytest.approx(math.exp((1 - t) * math.log(5.0) + t * math.log(1.0)))
    assert large.stderr == pytest.approx(large.value * math.hypot((1 - t) * 0.2 / 5.0, t * 0.3 / 1.0))
    assert large.where == "step2–step4"
    # A level no model's curve crosses leaves the models out; one above the first revision too.
    assert position_at_loss(RECORDS, level=1.0) == []
    assert [v.model for v in position_at_loss(RECORDS, level=3.5)] == ["small"]


def test_equal_compute_uses_6_n_t() -> None:
    # Final computes: small 6·100·40 = 24,000; large 6·1000·40 = 240,000.
    assert common_compute(RECORDS) == 24_000
    # The large model's compute at step 1 is 60,000 > 24,000: already past C*, left out.
    (small,) = position_at_compute(RECORDS)
    assert (small.model, small.value) == ("small", pytest.approx(2.0))
    values = position_at_compute(RECORDS, level=120_000)  # the large model at step 2
    assert [(v.model, v.value) for v in values] == [("large", pytest.approx(5.0))]


def test_position_at_step() -> None:
    values = position_at_step(RECORDS, 2)
    assert [(v.model, v.value, v.stderr) for v in values] == [
        ("small", pytest.approx(4.0), pytest.approx(0.01)),
        ("large", pytest.approx(5.0), pytest.approx(0.2)),
    ]
    assert position_at_step(RECORDS, 3) == []


def test_position_index_is_reported_as_its_reciprocal() -> None:
    spectrum = {"position_index": 400.0, "position_index_stderr": 20.0, "effective_rank": 100.0}
    records = [*RECORDS[:3], record("large", 1000, 4, 1.6, 1.0, spectrum=spectrum)]
    (value,) = position_index(records)
    assert value.model == "large" and value.value == pytest.approx(1 / 400)
    assert value.stderr == pytest.approx(20 / 400**2)
    (relative,) = position_index(records, per_rank=True)
    assert relative.statistic == "rank_per_index" and relative.value == pytest.approx(0.25)
    assert relative.stderr == pytest.approx(100 * 20 / 400**2)


def test_judge_uses_the_family_criterion() -> None:
    lowest = reach_values(RECORDS, "lowest")
    assert [v.value for v in lowest] == [2.0, 1.0]
    claim = judge(lowest).claim
    assert claim.outcome is Outcome.SUPPORTED  # 1.0 ± 0.3 below 2.0 ± 0.1 by more than 2 se
    final = reach_values(RECORDS, "final")
    assert [v.where for v in final] == ["step4", "step4"]
    reverse = [record("a", 10, 1, 1, 1.0), record("b", 100, 1, 1, 2.0), record("c", 1000, 1, 1, 4.0)]
    judged = judge(reach_values(reverse, "lowest"))
    assert judged.claim.outcome is Outcome.CONTRADICTED
    assert judged.fit is not None and judged.fit.exponent == pytest.approx(math.log10(2))
    for statistic in STATISTICS:
        reach_values(RECORDS, statistic)  # every statistic runs on records without spectra
    with pytest.raises(SpecprobeError, match="reach statistic"):
        reach_values(RECORDS, "median")

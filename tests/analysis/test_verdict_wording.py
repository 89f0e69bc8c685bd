"""The verdict's size comparisons read as what they are: every step between neighbouring
sizes said once, as below or above, beyond the noise or by less; no "± 0" for a value
without an error; the outcome word ("in order, but …", "not in order", "not shown …")
matching the steps."""

from __future__ import annotations

import math
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from specprobe.analysis.verdict import Outcome, monotone

values = st.floats(min_value=0.1, max_value=10.0, allow_nan=False)
errors = st.one_of(st.just(0.0), st.floats(min_value=0.001, max_value=2.0))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(values, errors), min_size=2, max_size=5))
def test_every_step_is_said_once_as_it_is(points: list[tuple[float, float]]) -> None:
    items = [(f"m{i}", v, se) for i, (v, se) in enumerate(points)]
    claim = monotone(items, "reach_grows_with_size", "larger models reach lower positions", None)
    text = claim.summary
    assert "± 0," not in text and "± 0)" not in text and not text.endswith("± 0")
    steps = []
    for (a, va, sa), (b, vb, sb) in pairwise(items):
        margin = 2 * math.hypot(sa, sb)
        steps.append(-1 if vb - va < -margin else 1 if vb - va > margin else 0)
        if claim.outcome is Outcome.UNCLEAR:
            side = "below" if vb < va else "above" if vb > va else "level with"
            said = f"{b} {side} {a} {'beyond' if steps[-1] else 'by less than'} 2 standard errors"
            assert text.count(said) == 1, (said, text)
    if all(s < 0 for s in steps):
        assert claim.outcome is Outcome.SUPPORTED and ": yes (" in text
    elif claim.outcome is Outcome.UNCLEAR:
        in_order = all(vb < va for (_, va, _), (_, vb, _) in pairwise(items))
        word = (
            "in order, but not every step beyond the noise"
            if in_order
            else "not in order"
            if any(s > 0 for s in steps)
            else "not shown beyond the noise"
        )
        assert f"larger models reach lower positions: {word} (" in text
        assert claim.evidence_against == any(s > 0 for s in steps)


def test_the_demo_family_reads_plainly() -> None:
    """The demo's reaches (2.1, 2.5, 2.0, 1.08 ·10⁻³) as the verdict now says them."""
    items = [
        ("neox-w16", 0.0021, 0.00058),
        ("neox-w32", 0.0025, 0.00057),
        ("neox-w64", 0.00201, 0.00029),
        ("neox-w128", 0.00108, 0.00015),
    ]
    text = monotone(items, "reach_grows_with_size", "larger models reach lower positions", None).summary
    assert text.startswith(
        "larger models reach lower positions: not shown beyond the noise (neox-w32 above neox-w16 by less "
        "than 2 standard errors; neox-w64 below neox-w32 by less than 2 standard errors; neox-w128 below "
        "neox-w64 beyond 2 standard errors: neox-w16 0.0021 ± 0.00058"
    )
    loss = monotone([("a", 2.42, 0.0), ("b", 1.92, 0.0)], "loss_falls_with_size", "lower loss", None).summary
    assert loss == "lower loss: yes (a 2.42, b 1.92)"

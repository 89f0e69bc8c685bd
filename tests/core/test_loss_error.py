"""The loss of a measurement carries its standard error over sequences: the delete-one-
sequence jackknife of L = Σ_s ℓ_s / Σ_s n_s, checked against a float64 reference and
against the spread of the loss over repeated disjoint subsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specprobe.config import Measuring
from specprobe.core.measure import measure
from specprobe.models.tiny import tiny_causal_lm
from specprobe.pipeline.aggregate import aggregate


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_causal_lm("gpt_neox", vocab_size=32, hidden_size=16).double()


def _reference(model: torch.nn.Module, ids: torch.Tensor) -> tuple[float, float]:
    """Loss and its jackknife error from a plain forward pass, in float64."""
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1].double()
    picked = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    per = (-picked.sum(-1)).numpy()
    counts = np.full(per.shape, ids.shape[1] - 1, dtype=float)
    k = len(per)
    left_out = (per.sum() - per) / (counts.sum() - counts)
    return per.sum() / counts.sum(), float(np.sqrt((k - 1) / k * ((left_out - left_out.mean()) ** 2).sum()))


def test_loss_error_is_the_jackknife_over_sequences() -> None:
    model = _model()
    ids = torch.randint(0, 32, (24, 10), generator=torch.Generator().manual_seed(1))
    loss, stderr = _reference(model, ids)
    for micro in (None, 5):  # one micro-batch, and several (a last one of 4)
        m = measure(model, {"input_ids": ids}, probes=2, seed=0, micro_batch_size=micro)
        assert m.loss == pytest.approx(loss, rel=1e-12)
        assert m.loss_stderr == pytest.approx(stderr, rel=1e-9)
    record = aggregate([m], Measuring.WHOLE)
    assert record["loss_stderr"] == pytest.approx(stderr, rel=1e-9)
    # One sequence has no spread: no error, never a made-up 0.
    assert measure(model, {"input_ids": ids[:1]}, probes=2, seed=0).loss_stderr is None


def test_loss_error_matches_the_spread_over_repeated_subsets() -> None:
    """Over 40 disjoint subsets of 16 sequences of structured text, the mean reported error
    is within 0.5–2× the standard deviation of the subsets' losses."""
    model = _model()
    gen = torch.Generator().manual_seed(2)
    # Sequences of varying difficulty: some repeat one token (easy to predict), most are random.
    ids = torch.randint(0, 32, (640, 12), generator=gen)
    easy = torch.rand(640, generator=gen) < 0.3
    ids[easy] = ids[easy, :1].expand(-1, 12)
    losses, errors = [], []
    for subset in ids.split(16):
        m = measure(model, {"input_ids": subset}, probes=2, seed=0, population=False)
        losses.append(m.loss)
        errors.append(m.loss_stderr)
    spread = float(np.std(losses, ddof=1))
    ratio = float(np.mean(errors)) / spread
    assert 0.5 <= ratio <= 2.0, (ratio, spread)

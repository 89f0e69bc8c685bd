"""Numbers that do not depend on how the batch was laid out (issue 29, section 5): left or
right padding, micro-batches with an embedding that scales its gradient by frequency, and
one-line errors for inputs the measurement cannot take. Each listed case failed before
the fix."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import specprobe
from specprobe.errors import BatchError
from specprobe.models.tiny import tiny_causal_lm

FIELDS = ("loss", "grad_norm_sq", "chi_net", "chi_loss", "spectral_position")


def _padded(ids: torch.Tensor, lengths: list[int], side: str, pad: int) -> dict[str, torch.Tensor]:
    """Rows of ``ids`` cut to ``lengths``, padded on ``side`` to the longest."""
    width = max(lengths)
    rows, masks = [], []
    for row, n in zip(ids, lengths, strict=True):
        fill = torch.full((width - n,), pad, dtype=torch.long)
        kept = row[:n]
        rows.append(torch.cat([fill, kept]) if side == "left" else torch.cat([kept, fill]))
        ones, zeros = torch.ones(n, dtype=torch.long), torch.zeros(width - n, dtype=torch.long)
        masks.append(torch.cat([zeros, ones]) if side == "left" else torch.cat([ones, zeros]))
    return {"input_ids": torch.stack(rows), "attention_mask": torch.stack(masks)}


@settings(max_examples=12, deadline=None)
@given(
    arch=st.sampled_from(["gpt2", "gpt_neox", "llama"]),
    lengths=st.lists(st.integers(3, 7), min_size=2, max_size=3),
    seed=st.integers(0, 3),
)
def test_left_and_right_padding_give_the_same_numbers(arch: str, lengths: list[int], seed: int) -> None:
    """A left-padded GPT-2 batch gave χ_pos 11 % lower, silently (its absolute positions
    were shifted by the padding); a left-padded GPT-NeoX or Llama batch gave NaN (a pad
    query before its row's tokens attends to nothing, and these mask with -inf)."""
    model = tiny_causal_lm(arch, vocab_size=16, hidden_size=8, num_layers=1, seed=seed).double()
    ids = torch.randint(1, 16, (len(lengths), max(lengths)), generator=torch.Generator().manual_seed(seed))
    results = [
        specprobe.measure(model, _padded(ids, lengths, side, pad=0), estimator="exact")
        for side in ("right", "left")
    ]
    for name in FIELDS:
        right, left = getattr(results[0], name), getattr(results[1], name)
        assert left == pytest.approx(right, rel=1e-9, abs=1e-12), (arch, name, right, left)


class _Bag(torch.nn.Module):
    """An embedding, optionally with ``scale_grad_by_freq``, and a linear read-out."""

    def __init__(self, scale: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(6, 4, scale_grad_by_freq=scale)
        self.out = torch.nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.embed(ids)).mean(1))


@settings(max_examples=10, deadline=None)
@given(micro=st.sampled_from([1, 2, 3, 6]), estimator=st.sampled_from(["exact", "hutchinson_per_sample"]))
def test_an_embedding_that_scales_by_frequency_is_measured_as_its_function(
    micro: int, estimator: str
) -> None:
    """``nn.Embedding(scale_grad_by_freq=True)``: χ_net depended on micro_batch_size and the
    exact estimator matched neither autograd nor the dense Jacobian. Its forward is a plain
    lookup, so its eNTK is the plain embedding's."""
    g = torch.Generator().manual_seed(1)
    batch = (torch.randint(0, 3, (6, 5), generator=g), torch.randint(0, 3, (6,), generator=g))
    scaled, plain = _Bag(True).double(), _Bag(False).double()
    got = specprobe.measure(scaled, batch, estimator=estimator, probes=4, micro_batch_size=micro)
    want = specprobe.measure(plain, batch, estimator=estimator, probes=4, micro_batch_size=micro)
    assert got.chi_net == pytest.approx(want.chi_net, rel=1e-9)
    assert got.grad_norm_sq == pytest.approx(want.grad_norm_sq, rel=1e-9)
    assert scaled.embed.scale_grad_by_freq  # restored
    reference = specprobe.measure(plain, batch, estimator="exact")
    if estimator == "exact":
        assert got.chi_net == pytest.approx(reference.chi_net, rel=1e-9)


def test_token_ids_beyond_the_vocabulary_are_one_line() -> None:
    """They gave a raw IndexError."""
    model = tiny_causal_lm("gpt_neox", vocab_size=16, hidden_size=8)
    with pytest.raises(BatchError) as err:
        specprobe.measure(model, {"input_ids": torch.tensor([[1, 2, 16, 3]])}, probes=2)
    assert err.value.message == "expected token ids in 0..15 (the model's vocabulary), found 16"


def test_a_forward_under_no_grad_is_one_line() -> None:
    """It gave a raw RuntimeError from the backward pass."""

    class Frozen(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.lin(x)

    batch = (torch.randn(4, 3), torch.randint(0, 2, (4,)))
    with pytest.raises(BatchError, match=r"without a gradient \(a forward under torch.no_grad"):
        specprobe.measure(Frozen(), batch, probes=2)


def test_integer_outputs_are_one_line() -> None:
    """They gave a misleading shape error."""

    class Rounded(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x).argmax(-1, keepdim=True).expand(-1, 2)

    batch = (torch.randn(4, 3), torch.randint(0, 2, (4,)))
    with pytest.raises(BatchError, match=r"expected floating-point model outputs .*, found torch.int64"):
        specprobe.measure(Rounded(), batch, probes=2)


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    side=st.sampled_from(["left", "right"]),
)
def test_the_left_padding_roll_right_pads_and_comes_back(lengths: list[int], side: str) -> None:
    """``left_padding_roll`` moves each left-padded row's tokens to its start and back
    exactly; a batch already right-padded is left alone."""
    from specprobe.core.adapters import left_padding_roll

    width = max(max(lengths), 1)
    ids = torch.arange(1, len(lengths) * width + 1).reshape(len(lengths), width)
    batch = _padded(ids, lengths, side, pad=0)
    right = _padded(ids, lengths, "right", pad=0)
    rolled = left_padding_roll(batch["attention_mask"])
    if rolled is None:
        # Only a batch whose rows are right-padded already (full or empty rows are both).
        assert torch.equal(batch["attention_mask"], right["attention_mask"])
        assert side == "right" or all(n in (0, width) for n in lengths)
        return
    to_right, back = rolled
    assert torch.equal(batch["input_ids"].gather(1, to_right), right["input_ids"])
    assert torch.equal(batch["attention_mask"].gather(1, to_right), right["attention_mask"])
    assert torch.equal(batch["input_ids"].gather(1, to_right).gather(1, back), batch["input_ids"])

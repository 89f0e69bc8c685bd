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


POPULATION = (
    "population_position",
    "population_position_stderr",
    "normalized_population_position",
    "single_position",
    "single_position_stderr",
    "mean_grad_sq",
    "mean_grad_sq_stderr",
    "noise_scale",
    "sequences_needed",
    "population_status",
)


@settings(max_examples=12, deadline=None)
@given(
    arch=st.sampled_from(["gpt2", "gpt_neox"]),
    lengths=st.lists(st.integers(2, 6), min_size=3, max_size=4),
    empty=st.lists(st.tuples(st.integers(0, 4), st.sampled_from([0, 1])), min_size=1, max_size=2),
    side=st.sampled_from(["right", "left"]),
    micro=st.sampled_from([None, 1, 2]),
)
def test_rows_without_a_counted_token_are_not_sequences(
    arch: str, lengths: list[int], empty: list[tuple[int, int]], side: str, micro: int | None
) -> None:
    """A row with no counted output (all padding, or one token: the last position predicts
    nothing) entered the population estimate as a sequence with a zero gradient: N grew by
    one and χ_pos^∞, (D/N)·χ_pos^∞, χ_pos(1) and ‖M‖² moved, silently (the loss's error
    already left such rows out). The batch with such rows gives the numbers of the batch
    without them."""
    model = tiny_causal_lm(arch, vocab_size=16, hidden_size=8, num_layers=1, seed=1).double()
    gen = torch.Generator().manual_seed(len(lengths))
    ids = torch.randint(1, 16, (len(lengths), max(lengths)), generator=gen)
    with_empty = list(lengths)
    for at, n in empty:
        with_empty.insert(min(at, len(with_empty)), n)
    full = torch.randint(1, 16, (len(with_empty), max(lengths)), generator=gen)
    rows = iter(ids)
    for i, n in enumerate(with_empty):
        if n >= 2:
            full[i] = next(rows)
    plain = specprobe.measure(model, _padded(ids, lengths, side, pad=0), estimator="exact")
    padded = specprobe.measure(
        model, _padded(full, with_empty, side, pad=0), estimator="exact", micro_batch_size=micro
    )
    for name in (*FIELDS, *POPULATION):
        expected, found = getattr(plain, name), getattr(padded, name)
        if isinstance(expected, float):
            assert found == pytest.approx(expected, rel=1e-8, abs=1e-12), (name, expected, found)
        else:
            assert found == expected, (name, expected, found)


@settings(max_examples=12, deadline=None)
@given(
    arch=st.sampled_from(["gpt_neox", "llama"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    at=st.integers(0, 3),
    micro=st.sampled_from([None, 1, 2, 3]),
)
def test_an_all_padding_row_is_measured_in_any_micro_batch(
    arch: str, dtype: torch.dtype, at: int, micro: int | None
) -> None:
    """A row with no attended token gave NaN (a NonFiniteError) in GPT-NeoX and Llama in
    float64 when its micro-batch held two rows, and measured in float32 or with other
    micro-batches: whether a batch could be measured depended on its layout. Now it
    measures, with the numbers of the batch without that row."""
    model = tiny_causal_lm(arch, vocab_size=16, hidden_size=8, num_layers=1, seed=1).to(dtype)
    ids = torch.randint(1, 16, (3, 5), generator=torch.Generator().manual_seed(at))
    plain = specprobe.measure(model, {"input_ids": ids}, estimator="exact")
    rows = [*ids]
    rows.insert(at, torch.zeros(5, dtype=torch.long))
    mask = torch.ones(4, 5, dtype=torch.long)
    mask[at] = 0
    padded = specprobe.measure(
        model,
        {"input_ids": torch.stack(rows), "attention_mask": mask},
        estimator="exact",
        micro_batch_size=micro,
    )
    for name in FIELDS:
        assert getattr(padded, name) == pytest.approx(getattr(plain, name), rel=1e-5), name

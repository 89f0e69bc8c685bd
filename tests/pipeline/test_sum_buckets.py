"""The gradient sum crosses processes in buckets (issue 31): every element once, in order,
at most a bucket's worth at a time, and back in place exactly, whatever the tensors' sizes
and dtypes. Before, the whole of V was concatenated into one float64 buffer (twice V's
size: 96 GB at 12B) next to V itself."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specprobe.pipeline.processes import buckets, gather_pieces, put_pieces


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), max_size=8), limit=st.integers(1, 17))
def test_buckets_cover_every_element_once_in_order(sizes: list[int], limit: int) -> None:
    groups = list(buckets(sizes, limit))
    assert all(0 < sum(b - a for _, a, b in group) <= limit for group in groups)
    assert all(sum(b - a for _, a, b in group) == limit for group in groups[:-1])  # only the last is short
    flat = [(i, e) for group in groups for i, a, b in group for e in range(a, b)]
    assert flat == [(i, e) for i, n in enumerate(sizes) for e in range(n)]


@settings(max_examples=100, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=3), min_size=1, max_size=5),
    limit=st.integers(1, 30),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
)
def test_pieces_go_out_and_come_back_exactly(shapes: list[list[int]], limit: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(*shape, generator=g).to(dtype) for shape in shapes]
    expected = [2 * t.double() for t in tensors]
    for bucket in buckets([t.numel() for t in tensors], limit):
        flat = gather_pieces(tensors, bucket)
        assert flat.dtype == torch.float64 and flat.numel() <= limit
        put_pieces(tensors, bucket, 2 * flat)  # as an all-reduce of two equal processes
    for t, e in zip(tensors, expected, strict=True):
        assert torch.equal(t, e.to(dtype))

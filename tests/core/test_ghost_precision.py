"""The Linear rule's inner products in a lower precision than their accumulation: a
bfloat16 direction (a bfloat16 model's gradient) cast a block of rows at a time, and the
whole batch's Gram form, both against float64 arithmetic on the same bfloat16 inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from specprobe.core.ghost import linear

F64 = torch.float64
U32 = 2.0**-24  # float32's unit roundoff


def _inputs(seed: int, k: int, groups: int, n: int, width_in: int, width_out: int) -> tuple[Tensor, ...]:
    """δ (k, G, N, out), a (G, N, in) and a direction D (out × in), all bfloat16 values."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(k, groups, n, width_out, generator=g).to(torch.bfloat16)
    a = torch.randn(groups, n, width_in, generator=g).to(torch.bfloat16)
    direction = torch.randn(width_out, width_in, generator=g).to(torch.bfloat16)
    return d, a, direction


def _bound(terms: Tensor, count: int) -> Tensor:
    """Float32 summation's error bound on a sum of ``count`` products, with margin."""
    return 4 * count * U32 * terms + 1e-30


SHAPES = st.tuples(
    st.integers(0, 2**16),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 5),
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(1, 40),
)


@settings(max_examples=40, deadline=None)
@given(SHAPES)
def test_bfloat16_direction_cast_in_blocks_is_float32_exact(shape: tuple[int, ...]) -> None:
    """Σ_t δ_tᵀ D a_t with D in bfloat16, cast ``cast`` elements at a time (a block of whole
    rows, at least one), for Linear (D as out × in) and Conv1D (D kept as in × out): equal
    to float64 arithmetic on the same values within float32's summation error."""
    seed, k, groups, n, width_in, width_out, cast = shape
    d, a, direction = _inputs(seed, k, groups, n, width_in, width_out)
    want = torch.einsum("kgto,oi,gti->kg", d.to(F64), direction.to(F64), a.to(F64))
    size = torch.einsum("kgto,oi,gti->kg", d.to(F64).abs(), direction.to(F64).abs(), a.to(F64).abs())
    old = linear._CAST_ELEMENTS
    linear._CAST_ELEMENTS = cast
    try:
        got = linear.LinearRule._bilinear(d.float(), direction, a.float(), torch.float32)
        got_t = linear.Conv1DRule._bilinear(d.float(), direction.T.contiguous(), a.float(), torch.float32)
    finally:
        linear._CAST_ELEMENTS = old
    bound = _bound(size, n * (width_in + width_out))
    assert got.dtype == torch.float32
    assert ((got.to(F64) - want).abs() <= bound).all()
    assert ((got_t.to(F64) - want).abs() <= bound).all()


@settings(max_examples=40, deadline=None)
@given(SHAPES)
def test_whole_batch_gram_equals_product_with_the_batch_gradient(shape: tuple[int, ...]) -> None:
    """Σ_{t∈g} Σ_t' (δ_t·δ_t')(a_t·a_t'), its Gram rows ``rows`` tokens at a time, equals
    ⟨Σ_{t∈g} δ_t a_tᵀ, Σ_t' δ_t' a_t'ᵀ⟩ computed in float64 from the same bfloat16 inputs,
    within float32's summation error."""
    seed, k, groups, n, width_in, width_out, rows = shape
    d, a, _ = _inputs(seed, k, groups, n, width_in, width_out)
    d64, a64 = d.to(F64), a.to(F64)
    per_group = torch.einsum("kgto,gti->kgoi", d64, a64)
    want = torch.einsum("kgoi,koi->kg", per_group, per_group.sum(1))
    size = torch.einsum("kgoi,koi->kg", per_group.abs(), per_group.abs().sum(1))
    old = linear._CHUNK_ELEMENTS
    linear._CHUNK_ELEMENTS = rows * k * groups * n
    try:
        got = linear._whole_batch_gram(a.float(), d.float())
    finally:
        linear._CHUNK_ELEMENTS = old
    bound = _bound(size + d64.abs().sum() * a64.abs().sum(), groups * n * (width_in + width_out))
    assert ((got.to(F64) - want).abs() <= bound).all()


@pytest.mark.parametrize("tokens,widths,cheaper", [(64, (4096, 16384), True), (4096, (2048, 2048), False)])
def test_gram_chosen_where_cheaper(tokens: int, widths: tuple[int, int], cheaper: bool) -> None:
    """2 × 32 tokens through Pythia-6.9b's MLP (4096 → 16384): the Gram (64² · 20480 flops)
    over the product (64 · 4096 · 16384); 4096 tokens through a 2048² layer: the product."""
    assert linear._gram_cheaper(tokens, *widths) is cheaper

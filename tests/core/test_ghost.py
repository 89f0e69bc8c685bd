"""Ghost norms (specprobe.core.ghost) against per-sample backward passes, and the device-side probes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import specprobe
from specprobe.core.adapters import resolve_adapter
from specprobe.core.ghost import GhostNorms
from specprobe.core.params import measuring, select_parameters
from specprobe.core.probes import hash32, probe_key, rademacher
from tests.conftest import CASES, HEAD_CASES, Case, lm_batch

F64 = torch.float64


class _ReusedWeight(nn.Module):
    """A head that reuses the first layer's weight in its own code (not a module call)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(5, 5)
        self.norm = nn.LayerNorm(5)
        self.out = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.norm(self.inp(x)))
        h = h + torch.nn.functional.linear(h, self.inp.weight)  # a use the hooks do not see
        return self.out(h)  # type: ignore[no-any-return]


def _cnn(dtype: torch.dtype) -> tuple[nn.Module, Any]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)
    ).to(dtype)
    g = torch.Generator().manual_seed(0)
    return model, (torch.randn(5, 1, 6, 6, generator=g, dtype=dtype), torch.randint(0, 4, (5,), generator=g))


def _reused(dtype: torch.dtype) -> tuple[nn.Module, Any]:
    g = torch.Generator().manual_seed(1)
    return _ReusedWeight().to(dtype), (
        torch.randn(6, 4, 5, generator=g, dtype=dtype),
        torch.randn(6, 4, 3, generator=g, dtype=dtype),
    )


def _llama_tied(dtype: torch.dtype) -> tuple[nn.Module, Any]:
    model = specprobe.models.tiny.tiny_causal_lm("llama", vocab_size=32, hidden_size=8, dtype=dtype)
    model.lm_head.weight = model.model.embed_tokens.weight
    return model, lm_batch()


GHOST = [
    *CASES,
    *HEAD_CASES,
    Case("llama_tied", _llama_tied),
    Case("cnn_fallback", _cnn),
    Case("weight_reused_in_code", _reused),
]
# Every parameter of these is handled by a ghost formula (none by the fallback):
NO_FALLBACK = {"gpt_neox_padded", "gpt2_tied", "llama", "llama_tied", "mlp_regression", "mlp_classification"}


def _brute(f: torch.Tensor, params: list[torch.Tensor], z: torch.Tensor, per_sample: bool) -> np.ndarray:
    """Σ_g ‖J_gᵀ z_g‖² per probe and tensor, by one plain backward pass per probe and group."""
    out = np.zeros((z.shape[0], len(params)))
    groups = range(f.shape[0]) if per_sample else [None]
    for j in range(z.shape[0]):
        for g in groups:
            zj = z[j].clone()
            if g is not None:
                keep = torch.zeros(f.shape[0], dtype=torch.bool)
                keep[g] = True
                zj[~keep] = 0
            grads = torch.autograd.grad(f, params, zj, retain_graph=True, allow_unused=True)
            out[j] += [0.0 if gr is None else float(gr.double().square().sum()) for gr in grads]
    return out


@pytest.mark.parametrize("per_sample", [True, False], ids=["per_sample", "whole_batch"])
@pytest.mark.parametrize("case", GHOST, ids=lambda c: c.name)
def test_ghost_norms_equal_plain_backward_passes(case: Case, per_sample: bool) -> None:
    model, batch = case.build(F64)
    selected = select_parameters(model, case.params)
    params = [p for _, p in selected]
    adapter = resolve_adapter(None, batch)
    with measuring(model, selected), GhostNorms(model, params, F64) as ghost:
        ghost.reset(adapter.num_samples(batch))
        adapted = adapter(model, batch)
        f = adapted.outputs
        z = rademacher(7, range(f.shape[0]), range(3), f.shape[1:], dtype=F64)
        z = z * adapted.mask.unsqueeze(-1).to(F64)
        got = ghost.norms(f, z, per_sample).numpy()
        plan = ghost._plan(f)
        want = _brute(f, params, z, per_sample)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert (want > 0).any()
    if case.name in NO_FALLBACK:
        assert plan.fallback == []
    if case.name == "cnn_fallback":  # the convolution and BatchNorm have no ghost formula
        names = [n for n, _ in selected]
        assert {names[i] for i in plan.fallback} == {"0.weight", "0.bias", "1.weight", "1.bias"}
    if case.name == "weight_reused_in_code":  # its graph has two uses, the hooks see one
        assert [n for n, _ in selected].index("inp.weight") in plan.fallback
    if case.name in ("gpt2_tied", "llama_tied"):
        assert plan.tied


def test_norm_modules_are_checked_to_be_elementwise() -> None:
    class MixingNorm(nn.Module):  # named like a norm, but its weight mixes features
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, dtype=F64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight.flip(0).cumsum(0)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), MixingNorm(), nn.Linear(4, 2)).to(F64)
    batch = (torch.randn(5, 3, dtype=F64), torch.randn(5, 2, dtype=F64))
    selected = select_parameters(model)
    params = [p for _, p in selected]
    with measuring(model, selected), GhostNorms(model, params, F64) as ghost:
        adapted = resolve_adapter(None, batch)(model, batch)
        z = rademacher(1, range(5), range(2), adapted.outputs.shape[1:], dtype=F64)
        got = ghost.norms(adapted.outputs, z, True).numpy()
        assert [n for n, _ in selected].index("1.weight") in ghost._plan(adapted.outputs).fallback
        want = _brute(adapted.outputs, params, z, True)
    np.testing.assert_allclose(got, want, rtol=1e-9)


class _ScaledNorm(nn.Module):
    """An elementwise norm no analytic form knows (y = x·w³, so ∂y/∂w = 3w²·x): forward mode."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, 4, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight**3


@pytest.mark.parametrize("arch", ["gpt_neox", "gpt2", "llama", "unknown"])
def test_norm_layers_take_the_analytic_form_checked_once(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # LayerNorm and the RMSNorms take ∂y/∂w analytically (equal bit for bit to the
    # forward-mode product: the dense comparisons above are unchanged); an unknown
    # elementwise norm keeps the forward-mode product. The check runs once per module,
    # not once per measurement.
    from specprobe.core.ghost import norm

    if arch == "unknown":
        torch.manual_seed(0)
        model: nn.Module = nn.Sequential(nn.Linear(3, 4), _ScaledNorm(), nn.Linear(4, 2)).to(F64)
        batch: Any = (torch.randn(5, 3, dtype=F64), torch.randn(5, 2, dtype=F64))
    else:
        model = specprobe.models.tiny.tiny_causal_lm(arch, vocab_size=32, hidden_size=8, dtype=F64)
        batch = lm_batch()
    checks: list[nn.Module] = []
    real_check = norm._check
    monkeypatch.setattr(norm, "_check", lambda call, ctx: checks.append(call.module) or real_check(call, ctx))
    first = specprobe.measure(model, batch, estimator="hutchinson_per_sample", probes=4)
    modules = [m for m in model.modules() if norm.NormRule.matches(m)]
    assert modules and len(checks) == len(set(checks)) == len(modules)
    want = {"gpt_neox": norm.ScaleForm.LAYER_NORM, "gpt2": norm.ScaleForm.LAYER_NORM}
    want.update(llama=norm.ScaleForm.RMS, unknown=norm.ScaleForm.JVP)
    assert {f for m in modules for f in norm._FORMS[m].values()} == {want[arch]}
    again = specprobe.measure(model, batch, estimator="hutchinson_per_sample", probes=4)
    assert len(checks) == len(modules) and again.chi_net == first.chi_net
    selected = select_parameters(model)
    params = [p for _, p in selected]
    with measuring(model, selected), GhostNorms(model, params, F64) as ghost:
        adapter = resolve_adapter(None, batch)
        ghost.reset(adapter.num_samples(batch))
        adapted = adapter(model, batch)
        f = adapted.outputs
        z = rademacher(2, range(f.shape[0]), range(2), f.shape[1:], dtype=F64)
        got = ghost.norms(f, z, True).numpy()
        assert ghost._plan(f).fallback == []
        want = _brute(f, params, z, True)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("estimator", ["hutchinson", "hutchinson_per_sample"])
@pytest.mark.parametrize("case", [CASES[2], CASES[3], CASES[4], CASES[0]], ids=lambda c: c.name)
def test_micro_batches_and_probe_batches_do_not_change_the_numbers(case: Case, estimator: str) -> None:
    model, batch = case.build(F64)
    runs = [
        specprobe.measure(
            model, batch, estimator=estimator, probes=4, micro_batch_size=micro, probe_batch_size=pb
        )
        for micro, pb in [(None, None), (1, 1), (2, 3)]
    ]
    for m in runs[1:]:
        assert m.chi_net == pytest.approx(runs[0].chi_net, rel=1e-10)
        assert m.grad_norm_sq == pytest.approx(runs[0].grad_norm_sq, rel=1e-10)
        assert m.chi_net_stderr == pytest.approx(runs[0].chi_net_stderr, rel=1e-8)


def test_plain_hutchinson_in_blocks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    # HUTCHINSON over several micro-batches keeps per-probe sums; when memory allows only a
    # block of them at once, the forward passes repeat per block and the numbers stay.
    model, batch = CASES[2].build(F64)
    whole = specprobe.measure(model, batch, probes=5, micro_batch_size=1)
    from specprobe.core import measure as lnp

    original = lnp._Run.plan

    def small_blocks(self: Any, *args: Any, **kwargs: Any) -> int:
        micro = original(self, *args, **kwargs)
        self.sum_block = 2
        return micro

    monkeypatch.setattr(lnp._Run, "plan", small_blocks)
    blocked = specprobe.measure(model, batch, probes=5, micro_batch_size=1)
    assert blocked.chi_net == pytest.approx(whole.chi_net, rel=1e-12)
    assert blocked.chi_net_stderr == pytest.approx(whole.chi_net_stderr, rel=1e-10)


def _lowbias32(x: int) -> int:
    """The reference mixer in plain Python integers."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_probe_hash_equals_the_reference_mixer() -> None:
    values = [0, 1, 2, 31, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xDEADBEEF, 0xFFFFFFFF]
    got = hash32(torch.tensor(values, dtype=torch.int64)).tolist()
    assert got == [_lowbias32(v) for v in values]


def test_probes_are_a_pure_function_of_seed_sample_probe_and_position() -> None:
    shape = (5, 37)  # 185 entries: not a multiple of 32
    whole = rademacher(3, range(4), range(6), shape)
    assert set(whole.unique().tolist()) == {-1.0, 1.0}
    # A micro-batch of samples 2..3 and a block of probes 4..5 draw the same values.
    part = rademacher(3, range(2, 4), range(4, 6), shape)
    assert torch.equal(part, whole[4:6, 2:4])
    # Entry i is bit i mod 32 of the hash of word i // 32, under the (seed, sample, probe) key.
    k1, k2 = probe_key(3, 1, 2)
    flat = whole[2, 1].reshape(-1)
    for i in (0, 31, 32, 100, 184):
        word = _lowbias32(_lowbias32(i // 32 ^ k1) ^ k2)
        assert flat[i] == 1 - 2 * ((word >> (i % 32)) & 1)
    assert torch.equal(rademacher(3, [1], [2], shape, dtype=torch.bfloat16).float(), whole[2:3, 1:2])
    assert not torch.equal(rademacher(4, range(4), range(6), shape), whole)
    # Balanced: the mean of 24 × 185 signs is within 4 standard errors of 0.
    assert abs(float(whole.mean())) < 4 / np.sqrt(whole.numel())


def test_measure_leaves_grad_buffers_alone() -> None:
    model, batch = CASES[2].build(F64)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    before = [p.grad for p in model.parameters()]
    specprobe.measure(model, batch, probes=3, micro_batch_size=2)
    specprobe.measure(model, batch, estimator="hutchinson_per_sample", probes=3)
    for p, grad in zip(model.parameters(), before, strict=True):
        assert p.grad is grad and bool((grad == 3.0).all())

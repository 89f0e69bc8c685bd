"""The population position (specprobe.core.population): per-sequence terms against explicit
per-sample gradients, the estimates and their jackknife against a direct float64
computation, invariance to the micro-batch and the split across processes, and the
statistics (unbiased ‖M‖², honest standard errors, χ_pos(n) predicted across n)."""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import specprobe
from specprobe.core.adapters import loss_and_residual, resolve_adapter
from specprobe.core.ghost import GhostNorms, linear
from specprobe.core.params import measuring, select_parameters
from specprobe.core.population import PopulationStatus, SequenceSums, residual_norms
from specprobe.errors import SpecprobeError
from specprobe.models.tiny import tiny_causal_lm
from tests.conftest import Case
from tests.core.test_ghost import GHOST

F64 = torch.float64

POPULATION_FIELDS = [
    "population_position",
    "population_position_stderr",
    "normalized_population_position",
    "normalized_population_position_stderr",
    "noise_scale",
    "noise_scale_stderr",
    "noise_scale_tokens",
    "single_position",
    "single_position_stderr",
    "mean_grad_sq",
    "mean_grad_sq_stderr",
]


@dataclass
class PerSample:
    """Explicit per-sample gradients v_s (flattened per tensor) and residual norms ρ_s."""

    v: list[list[np.ndarray]]  # v[s][p]
    rho: np.ndarray

    def V(self) -> list[np.ndarray]:
        return [sum(vs[p] for vs in self.v) for p in range(len(self.v[0]))]


def per_sample_gradients(model: nn.Module, batch: Any, params: list[Tensor]) -> PerSample:
    """One plain backward pass per sample of its summed loss ℓ_s (the residual masked to s)."""
    adapted = resolve_adapter(None, batch)(model, batch)
    f = adapted.outputs
    _, residual = loss_and_residual(adapted, F64)
    v, rho = [], []
    for s in range(f.shape[0]):
        z = torch.zeros_like(residual)
        z[s] = residual[s]
        grads = torch.autograd.grad(f, params, z.to(f.dtype), retain_graph=True, allow_unused=True)
        v.append(
            [
                np.zeros(p.numel()) if g is None else g.double().reshape(-1).numpy()
                for g, p in zip(grads, params, strict=True)
            ]
        )
        rho.append(float(residual[s].square().sum()))
    return PerSample(v, np.array(rho))


def _fallback_mlp(dtype: torch.dtype) -> tuple[nn.Module, Any]:
    """A model whose first layer only the fallback handles (a Conv1d, no ghost formula)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 3, 2), nn.Flatten(), nn.Tanh(), nn.Linear(9, 2)).to(dtype)
    g = torch.Generator().manual_seed(0)
    return model, (
        torch.randn(5, 2, 4, generator=g, dtype=dtype),
        torch.randn(5, 2, generator=g, dtype=dtype),
    )


TERM_CASES = [
    c for c in GHOST if c.name in {"gpt2_tied", "gpt_neox_padded", "llama", "llama_tied", "cnn_fallback"}
]
TERM_CASES.append(Case("conv1d_fallback", _fallback_mlp))


@pytest.mark.parametrize("gram", [True, False], ids=["gram", "product"])
@pytest.mark.parametrize("path", ["second_pass", "gradient_pass", "last_micro_batch"])
@pytest.mark.parametrize("case", TERM_CASES, ids=lambda c: c.name)
def test_sequence_terms_equal_explicit_per_sample_gradients(
    case: Case, path: str, gram: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a_s = ‖v_s‖², c_s = ⟨v_s, V⟩ and ρ_s per tensor: from a residual backward pass once V
    is known (``SequenceSums.add``, several micro-batches), and from the gradient's own
    backward pass, each tensor's terms as its part of V arrives (``gradient_terms``, one),
    with a Linear's c_s there from the batch's Gram or from the product with V_p; and as the
    last of several micro-batches, the gradient added into the earlier ones' sum R and the
    inner products taken with the total R + V (``gradient_terms(direction=...)``)."""
    monkeypatch.setattr(linear, "_gram_cheaper", lambda *_: gram)
    model, batch = case.build(F64)
    selected = select_parameters(model, case.params)
    params = [p for _, p in selected]
    with measuring(model, selected):
        ref = per_sample_gradients(model, batch, params)
        V = ref.V()
        with GhostNorms(model, params, F64) as ghost:
            adapter = resolve_adapter(None, batch)
            ghost.reset(adapter.num_samples(batch))
            adapted = adapter(model, batch)
            _, residual = loss_and_residual(adapted, F64)
            sums = SequenceSums(adapted.outputs.shape[0], len(params))
            if path == "second_pass":
                directions = [torch.from_numpy(x).reshape(p.shape) for x, p in zip(V, params, strict=True)]
                sums.add(ghost, adapted.outputs, residual, 0, directions)
            elif path == "last_micro_batch":
                g = torch.Generator().manual_seed(5)
                earlier = [torch.randn(p.shape, generator=g, dtype=F64) for p in params]  # R
                running: list[Tensor | None] = [r.clone() for r in earlier]
                terms = ghost.gradient_terms(
                    adapted.outputs,
                    residual,
                    lambda i, grad: running[i].add_(grad),  # type: ignore[union-attr]
                    lambda i: running[i],  # type: ignore[return-value]
                )
                assert terms.inner is not None
                sums.take(terms.values[0], terms.inner[0], residual_norms(residual), 0)
                V = [v + r.reshape(-1).numpy() for v, r in zip(V, earlier, strict=True)]  # R + V
            else:
                handed: dict[int, np.ndarray] = {}
                terms = ghost.gradient_terms(
                    adapted.outputs,
                    residual,
                    lambda i, g: handed.__setitem__(i, g.double().reshape(-1).numpy()),
                )
                assert terms.inner is not None
                sums.take(terms.values[0], terms.inner[0], residual_norms(residual), 0)
                for i, want in enumerate(V):  # the gradient handed on is V itself
                    np.testing.assert_allclose(
                        handed.get(i, np.zeros_like(want)), want, rtol=1e-12, atol=1e-15
                    )
            fallback = ghost._plan(adapted.outputs).fallback
    want_a = np.array([[float(x @ x) for x in vs] for vs in ref.v])
    want_c = np.array([[float(x @ y) for x, y in zip(vs, V, strict=True)] for vs in ref.v])
    np.testing.assert_allclose(sums.a, want_a, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(sums.c, want_c, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(sums.rho, ref.rho, rtol=1e-12)
    assert (want_a > 0).any()
    if case.name in ("cnn_fallback", "conv1d_fallback"):
        assert fallback  # the fallback's per-sample gradients give these tensors' terms


def _direct(ref: PerSample, tau: np.ndarray, members: list[int]) -> dict[str, float]:
    """The estimates and their jackknife from explicit per-sample gradients, each deleted
    set's statistics recomputed from scratch (no algebraic shortcut)."""

    def stats(keep: list[int]) -> dict[str, float]:
        n = len(keep)
        V = [sum(ref.v[s][p] for s in keep) for p in members]
        S = sum(float(x @ x) for x in V)
        Q = sum(float(ref.v[s][p] @ ref.v[s][p]) for s in keep for p in members)
        R = float(ref.rho[keep].mean())
        T = float(tau[keep][:, members].sum(1).mean())
        m2 = (S - Q) / (n * (n - 1))
        A = Q / n
        return {
            "mean_grad_sq": m2,
            "population_position": m2 / (R * T),
            "single_position": A / (R * T),
            "noise_scale": (A - m2) / m2,
        }

    n = len(ref.v)
    full = stats(list(range(n)))
    leave = [stats([s for s in range(n) if s != d]) for d in range(n)]
    for name in list(full):
        values = np.array([x[name] for x in leave])
        full[name + "_stderr"] = math.sqrt((n - 1) / n * float(np.square(values - values.mean()).sum()))
    return full


@cache
def _trained_gpt2() -> nn.Module:
    """A tiny GPT-2 (tied embeddings) after a few Adam steps on Markov data: ‖M‖² > 0.
    (Shared by the tests; measure leaves it as it found it.)"""
    model = tiny_causal_lm("gpt2", vocab_size=16, hidden_size=8, dtype=F64)
    _train(model, markov_batch(64, 10, seed=100), steps=5, lr=3e-2)
    return model


def test_estimates_and_jackknife_equal_a_direct_computation() -> None:
    """EXACT gives exact τ_s: every population field and the groups' χ_pos^∞ against _direct."""
    model = _trained_gpt2()
    batch = markov_batch(6, 10, seed=7)
    got = specprobe.measure(model, batch, estimator="exact", groups="auto")
    selected = select_parameters(model)
    names, params = [n for n, _ in selected], [p for _, p in selected]
    with measuring(model, selected):
        ref = per_sample_gradients(model, batch, params)
        kernel = specprobe.dense_kernel(model, batch)
    # τ_s per tensor: the exact trace of the sample's diagonal block, tensor by tensor
    tau = _exact_sample_traces(model, batch, params)
    np.testing.assert_allclose(tau.sum(), float(torch.trace(kernel.theta)), rtol=1e-9)
    want = _direct(ref, tau, list(range(len(params))))
    assert want["mean_grad_sq"] > 0 and got.population_status in ("ok", "noisy")
    noisy = want["population_position_stderr"] > 0.5 * want["population_position"]
    assert got.population_status == ("noisy" if noisy else "ok")
    for name, value in want.items():
        assert getattr(got, name) == pytest.approx(value, rel=1e-9), name
    assert got.spectral_position == pytest.approx(
        sum(float(x @ x) for x in ref.V()) / (ref.rho.sum() * tau.sum()), rel=1e-9
    )
    per_sequence = got.num_outputs / got.num_samples
    assert got.normalized_population_position == pytest.approx(
        per_sequence * want["population_position"], rel=1e-12
    )
    assert got.noise_scale_tokens == pytest.approx(want["noise_scale"] * got.num_tokens / 6, rel=1e-12)
    assert got.position_at(6) == pytest.approx(
        want["population_position"] + (want["single_position"] - want["population_position"]) / 6
    )
    assert got.sequences_needed is not None and got.sequences_needed >= 2
    groups = specprobe.core.params.group_parameters(names, "auto")
    assert got.groups is not None
    for share in got.groups:
        members = [i for i, g in enumerate(groups) if g == share.name]
        direct = _direct(ref, tau, members)
        if direct["mean_grad_sq"] > 0:
            assert share.population_position == pytest.approx(direct["population_position"], rel=1e-9)
            assert share.population_position_stderr == pytest.approx(
                direct["population_position_stderr"], rel=1e-9
            )
        else:
            assert share.population_position is None
    record = got.to_dict()
    assert set(POPULATION_FIELDS) <= set(record) and record["population_status"] == got.population_status


def _exact_sample_traces(model: nn.Module, batch: Any, params: list[Tensor]) -> np.ndarray:
    """τ_s per tensor, Σ over the sample's counted outputs i of ‖∂f_i/∂θ_p‖², one backward each."""
    adapted = resolve_adapter(None, batch)(model, batch)
    f = adapted.outputs
    out = np.zeros((f.shape[0], len(params)))
    for s in range(f.shape[0]):
        for t in torch.nonzero(adapted.mask[s]).reshape(-1).tolist():
            for k in range(f.shape[-1]):
                grads = torch.autograd.grad(f[s, t, k], params, retain_graph=True, allow_unused=True)
                out[s] += [0.0 if g is None else float(g.double().square().sum()) for g in grads]
    return out


def _fields(m: specprobe.Measurement) -> dict[str, Any]:
    out = {name: getattr(m, name) for name in [*POPULATION_FIELDS, "population_status", "sequences_needed"]}
    for share in m.groups or ():
        out[share.name] = (share.population_position, share.population_position_stderr)
    return out


def _same(a: dict[str, Any], b: dict[str, Any], rel: float = 1e-9) -> None:
    assert a.keys() == b.keys()
    for key, x in a.items():
        for u, w in zip(x, b[key], strict=True) if isinstance(x, tuple) else [(x, b[key])]:
            if isinstance(u, float):
                assert w == pytest.approx(u, rel=rel), key
            else:
                assert u == w, key


@pytest.mark.parametrize("estimator", ["hutchinson_per_sample", "exact"])
def test_fields_equal_across_micro_batch_sizes(estimator: str) -> None:
    model = _trained_gpt2()
    batch = markov_batch(7, 10, seed=11)
    runs = [
        specprobe.measure(
            model, batch, estimator=estimator, probes=4, seed=3, micro_batch_size=mb, groups="auto"
        )
        for mb in (None, 1, 3)
    ]
    first = _fields(runs[0])
    assert first["population_position"] is not None
    for other in runs[1:]:
        _same(first, _fields(other))


def test_the_last_micro_batch_needs_no_second_pass() -> None:
    """Over several micro-batches in one process, c_s = ⟨v_s, V⟩ of the last one comes from
    its own first-pass backward (V is complete once its part is added): forward passes are
    1 (memory sizing) + 7 (first pass) + 6 (second pass) with 7 micro-batches of 1, not 15."""
    model = _trained_gpt2()
    batch = markov_batch(7, 10, seed=11)
    calls: list[int] = []
    handle = model.register_forward_hook(lambda m, args, out: calls.append(1))
    try:
        specprobe.measure(
            model, batch, estimator="hutchinson_per_sample", probes=4, seed=3, micro_batch_size=1
        )
    finally:
        handle.remove()
    assert len(calls) == 1 + 7 + 6


def test_plain_hutchinson_and_population_off_leave_the_fields_none() -> None:
    model = _trained_gpt2()
    batch = markov_batch(5, 10, seed=9)
    plain = specprobe.measure(model, batch, estimator="hutchinson", probes=4, groups="auto")
    off = specprobe.measure(model, batch, estimator="hutchinson_per_sample", probes=4, population=False)
    on = specprobe.measure(model, batch, estimator="hutchinson_per_sample", probes=4)
    for m in (plain, off):
        assert all(getattr(m, name) is None for name in POPULATION_FIELDS)
        assert m.population_status is None and m.sequences_needed is None and m.position_at(8) is None
    assert plain.groups is not None and all(g.population_position is None for g in plain.groups)
    assert on.spectral_position == pytest.approx(off.spectral_position, rel=1e-12)
    one = specprobe.measure(model, markov_batch(1, 10, seed=9), estimator="hutchinson_per_sample", probes=4)
    assert one.population_position is None and one.population_status is None  # n < 2


class _Baton:
    """Threads that take turns: one computes at a time (forward-mode AD is process-global
    state), the turn passed on at each collective, as processes would meet there."""

    def __init__(self, world: int) -> None:
        self.world, self.turn, self.failed = world, 0, False
        self.cond = threading.Condition()
        self.slots: dict[int, Any] = {}
        self.results: list[list[Any]] = []

    def wait(self, rank: int) -> None:
        """Inside ``cond``: until it is ``rank``'s turn."""
        self.cond.wait_for(lambda: self.turn == rank or self.failed)
        if self.failed:
            raise RuntimeError("another emulated process failed")

    def pass_on(self, rank: int) -> None:
        with self.cond:
            self.turn = (rank + 1) % self.world
            self.cond.notify_all()


class ThreadReduction:
    """An in-process emulation of the Reduction protocol: one thread per 'process', the
    collectives exchanged through a :class:`_Baton` in two phases (deposit, then read)."""

    def __init__(self, baton: _Baton, rank: int, offset: int) -> None:
        self.baton, self.rank, self._offset, self.round = baton, rank, offset, 0

    @property
    def offset(self) -> int:
        return self._offset

    def _exchange(self, value: Any) -> list[Any]:
        baton = self.baton
        with baton.cond:
            baton.slots[self.rank] = value
            if self.rank == baton.world - 1:  # the last to deposit: the round is complete
                baton.results.append([baton.slots[r] for r in range(baton.world)])
            baton.turn = (self.rank + 1) % baton.world
            baton.cond.notify_all()
            baton.wait(self.rank)
            values = baton.results[self.round]
        self.round += 1
        return values

    def sum_(self, tensors: list[Tensor]) -> None:
        parts = self._exchange([t.clone() for t in tensors])
        for i, t in enumerate(tensors):
            t.copy_(sum(p[i] for p in parts))

    def gather(self, array: np.ndarray) -> np.ndarray:
        return np.concatenate(self._exchange(array.copy()), axis=0)

    def sum_scalars(self, values: np.ndarray) -> np.ndarray:
        return np.sum(self._exchange(values.copy()), axis=0)


def _split(
    model: nn.Module, batch: dict[str, Tensor], cuts: list[int], **options: Any
) -> list[specprobe.Measurement]:
    """``measure`` of ``batch`` split at ``cuts`` over threads emulating processes."""
    bounds = [0, *cuts, batch["input_ids"].shape[0]]
    world = len(bounds) - 1
    baton = _Baton(world)
    results: list[Any] = [None] * world

    def work(rank: int) -> None:
        part = {k: v[bounds[rank] : bounds[rank + 1]] for k, v in batch.items()}
        try:
            with baton.cond:
                baton.wait(rank)
            reduce = ThreadReduction(baton, rank, bounds[rank])
            results[rank] = specprobe.measure(copy.deepcopy(model), part, reduce=reduce, **options)
            baton.pass_on(rank)
        except BaseException as err:
            results[rank] = err
            with baton.cond:
                baton.failed = True
                baton.cond.notify_all()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


@pytest.mark.parametrize("micro", [None, 2])
def test_split_across_processes_equals_one_process(micro: int | None) -> None:
    model = _trained_gpt2()
    batch = markov_batch(7, 10, seed=10)
    options = {
        "estimator": "hutchinson_per_sample",
        "probes": 4,
        "seed": 5,
        "micro_batch_size": micro,
        "groups": "auto",
    }
    whole = specprobe.measure(model, batch, **options)
    for split in _split(model, batch, [3], **options):
        _same(_fields(whole), _fields(split))
        for name in ("spectral_position", "chi_net", "chi_net_stderr", "grad_norm_sq", "chi_loss", "loss"):
            assert getattr(split, name) == pytest.approx(getattr(whole, name), rel=1e-9), name
        assert (split.num_samples, split.num_tokens, split.num_outputs) == (
            7,
            whole.num_tokens,
            whole.num_outputs,
        )


def test_split_refuses_plain_hutchinson_and_a_missing_seed() -> None:
    model = _trained_gpt2()
    batch = markov_batch(4, 10, seed=11)
    reduce = ThreadReduction(_Baton(1), 0, 0)
    with pytest.raises(SpecprobeError, match="adds over processes"):
        specprobe.measure(model, batch, estimator="hutchinson", reduce=reduce)
    with pytest.raises(SpecprobeError, match="seed"):
        specprobe.measure(model, batch, estimator="hutchinson_per_sample", seed=None, reduce=reduce)


# -- statistics -----------------------------------------------------------------------


def markov_batch(n: int, seq: int, seed: int, vocab: int = 16) -> dict[str, Tensor]:
    """n sequences of a fixed random Markov chain (the same chain for every seed): data
    with a learnable mean gradient."""
    chain = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(vocab, vocab, generator=chain)
    probs = torch.softmax(logits, -1)
    g = torch.Generator().manual_seed(seed)
    ids = torch.empty(n, seq, dtype=torch.long)
    ids[:, 0] = torch.randint(0, vocab, (n,), generator=g)
    for t in range(1, seq):
        ids[:, t] = torch.multinomial(probs[ids[:, t - 1]], 1, generator=g).squeeze(1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _train(model: nn.Module, batch: dict[str, Tensor], steps: int, lr: float) -> None:
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
    model.eval()


@pytest.mark.slow
def test_mean_grad_sq_is_unbiased_and_its_stderr_honest() -> None:
    """The mean of ‖M‖²^ over 50 random subsets of 16 of 512 sequences agrees with the
    estimate from all 512 within 3 standard errors; the reported standard error is within
    0.5–2× the spread of the 50."""
    model = _trained_gpt2()
    pool = markov_batch(512, 10, seed=1)
    options: dict[str, Any] = {"estimator": "hutchinson_per_sample", "probes": 2, "seed": 0}
    full = specprobe.measure(model, pool, **options)
    assert full.mean_grad_sq is not None and full.mean_grad_sq_stderr is not None
    rng = np.random.default_rng(0)
    values, errors = [], []
    for _ in range(50):
        pick = torch.from_numpy(rng.choice(512, 16, replace=False))
        m = specprobe.measure(model, {k: v[pick] for k, v in pool.items()}, **options)
        assert m.mean_grad_sq is not None and m.mean_grad_sq_stderr is not None
        values.append(m.mean_grad_sq)
        errors.append(m.mean_grad_sq_stderr)
    spread = float(np.std(values, ddof=1))
    gap = abs(float(np.mean(values)) - full.mean_grad_sq)
    assert gap <= 3 * math.hypot(spread / math.sqrt(50), full.mean_grad_sq_stderr)
    assert 0.5 * spread <= float(np.mean(errors)) <= 2 * spread


@pytest.mark.slow
def test_position_predicted_across_batch_sizes() -> None:
    """χ_pos(n) = χ_pos^∞ + (χ_pos(1) − χ_pos^∞)/n from one measurement of 32 sequences
    matches the measured χ_pos at n = 8 (mean over 16 batches) and n = 128, within 3
    standard errors (of the prediction, by its jackknife, and of the measured value)."""
    model = _trained_gpt2()
    options: dict[str, Any] = {"estimator": "hutchinson_per_sample", "probes": 8, "seed": 0}
    one = specprobe.measure(model, markov_batch(32, 10, seed=2), **options)
    assert one.population_status == PopulationStatus.OK.value
    # measured: 16 batches of 8, and one of 128 (its spread over sequences from its own jackknife)
    small = [
        specprobe.measure(model, markov_batch(8, 10, seed=100 + i), **options).spectral_position
        for i in range(16)
    ]
    big = specprobe.measure(model, markov_batch(128, 10, seed=3), **options)
    measured = {
        8: (float(np.mean(small)), float(np.std(small, ddof=1)) / 4),
        128: (big.spectral_position, _se_at(big, 128)),
    }
    for n, (value, se) in measured.items():
        predicted = one.position_at(n)
        assert predicted is not None
        assert abs(predicted - value) <= 3 * math.hypot(_se_at(one, n), se), n


def _se_at(m: specprobe.Measurement, n: int) -> float:
    """A standard error of position_at(n), the two terms' jackknife errors added linearly
    (the estimates are positively correlated: an upper bound)."""
    assert m.population_position_stderr is not None and m.single_position_stderr is not None
    return (1 - 1 / n) * m.population_position_stderr + m.single_position_stderr / n

"""The matrix-free eNTK operator against the dense reference (explicit J and Θ) in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd.function import once_differentiable

import specprobe
from specprobe.core.operator import MatrixOperator, NTKOperator, ProductMode
from specprobe.core.operator.ntk import COLUMN_BUDGET, _columns_per_pass
from specprobe.core.operator.products import GRAM_SLICE, gram_matrix, squared_norms
from tests.conftest import CASES, HEAD_CASES, Case, lm_batch, mlp

F64 = torch.float64
# Llama's eager attention takes its softmax in float32 even in a float64 model (see
# test_lnp), so its products agree to ~1e-8 instead of ~1e-11.
TOL = {"llama": 1e-6, "llama_last_block": 1e-6}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def random_block(d: int, b: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(d, b, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("case", CASES + HEAD_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("mode", ["double_vjp", "jvp"])
def test_products_match_dense_reference(case: Case, mode: str) -> None:
    model, batch = case.build(F64)
    ref = specprobe.dense_kernel(model, batch, params=case.params)
    op = NTKOperator(model, batch, params=case.params, mode=mode)
    assert op.shape == tuple(ref.theta.shape)
    assert op.num_params == ref.jacobian.shape[1]
    U = random_block(op.num_outputs, 5)
    assert rel_err(op.matmat(U), ref.theta @ U) <= TOL.get(case.name, 1e-10)
    assert rel_err(op.matvec(U[:, 0]), ref.theta @ U[:, 0]) <= TOL.get(case.name, 1e-10)
    assert op.mode_used is ProductMode(mode)
    # The residual g = ∂L/∂f in the same flat order, and the mean loss.
    assert float((op.residual - ref.residual).abs().max()) <= 1e-14
    assert op.loss == pytest.approx(ref.loss, rel=1e-12)


@pytest.mark.parametrize("case", CASES[:4], ids=lambda c: c.name)
def test_operator_is_symmetric(case: Case) -> None:
    model, batch = case.build(F64)
    op = NTKOperator(model, batch)
    U = random_block(op.num_outputs, 2, seed=1)
    assert op.check_symmetry(U[:, 0], U[:, 1]) <= 1e-12


@pytest.mark.parametrize("case", [CASES[1], CASES[2]], ids=lambda c: c.name)
@pytest.mark.parametrize("micro", [1, 2])
@pytest.mark.parametrize("cache_graph", [True, False])
def test_micro_batching_and_caching_give_the_same_products(case: Case, micro: int, cache_graph: bool) -> None:
    model, batch = case.build(F64)
    whole = NTKOperator(model, batch)
    U = random_block(whole.num_outputs, 3, seed=2)
    expected = whole.matmat(U)
    op = NTKOperator(model, batch, micro_batch_size=micro, cache_graph=cache_graph, vector_batch_size=2)
    # Without a cached graph AUTO computes J·w by forward mode instead of double backward:
    # GPT-NeoX's rotary tables are float32, so the modes agree to ~1e-11, not 1e-15.
    with op:
        assert rel_err(op.matmat(U), expected) <= 1e-10
        assert rel_err(op.matmat(U), expected) <= 1e-10  # again, on the cached graphs
    assert op.sample_offsets() == whole.sample_offsets()
    assert float((op.residual - whole.residual).abs().max()) <= 1e-15


def test_sample_offsets_follow_the_mask() -> None:
    model, batch = CASES[2].build(F64)  # lengths 7, 5, 3 predict 6, 4, 2 tokens of V = 32
    op = NTKOperator(model, batch, micro_batch_size=2)
    assert op.sample_offsets() == [0, 6 * 32, 10 * 32, 12 * 32]
    assert op.num_outputs == 12 * 32


def test_quadratic_forms_and_traces() -> None:
    model, batch = CASES[2].build(F64)
    ref = specprobe.dense_kernel(model, batch)
    op = NTKOperator(model, batch, micro_batch_size=2, vector_batch_size=7)
    Z = random_block(op.num_outputs, 3, seed=3)
    expected = (Z * (ref.theta @ Z)).sum(0)
    assert rel_err(op.quadratic_form(Z), expected) <= 1e-10
    assert op.quadratic_forms == 3 and op.products == 0  # half products: no jvp needed
    assert op.trace_exact() == pytest.approx(ref.chi_net, rel=1e-10)
    assert rel_err(op.diagonal(), torch.diagonal(ref.theta)) <= 1e-10
    value, stderr = op.trace_hutchinson(probes=64, seed=4)
    assert abs(value - ref.chi_net) <= 4 * stderr
    assert op.trace_hutchinson(probes=64, seed=4) == (value, stderr)  # seeded


def test_counters_and_dense_conversion() -> None:
    model, batch = CASES[1].build(F64)  # D = 27
    ref = specprobe.dense_kernel(model, batch)
    op = NTKOperator(model, batch, vector_batch_size=4)
    op.matmat(random_block(27, 10))
    assert op.products == 2 + 10  # 2 for the symmetry check before the first product
    op.reset_counters()
    assert rel_err(op.to_dense(), ref.theta) <= 1e-12
    assert op.products == 27
    with pytest.raises(specprobe.TooLargeError, match="max_outputs=10"):
        op.to_dense(max_outputs=10)


def test_to_scipy_linear_operator() -> None:
    scipy_linalg = pytest.importorskip("scipy.sparse.linalg")
    import numpy as np

    model, batch = CASES[2].build(F64)
    ref = specprobe.dense_kernel(model, batch)
    op = NTKOperator(model, batch)
    linear = op.to_scipy()
    assert linear.shape == op.shape and linear.dtype == np.float64
    x = np.random.default_rng(0).standard_normal(op.num_outputs)
    expected = ref.theta.numpy() @ x
    assert np.linalg.norm(linear @ x - expected) <= 1e-10 * np.linalg.norm(expected)
    with op:
        values = scipy_linalg.eigsh(linear, k=3, which="LA", tol=1e-10, return_eigenvectors=False)
    assert np.allclose(np.sort(values)[::-1], ref.eigenvalues[:3].numpy(), rtol=1e-9)


def test_float32_model_gives_float64_vectors() -> None:
    model, batch = CASES[2].build(torch.float32)
    op32 = NTKOperator(model, batch)
    U = random_block(op32.num_outputs, 2)
    y32 = op32.matmat(U)
    assert y32.dtype == F64 and op32.acc_dtype == torch.float32
    y64 = NTKOperator(model.double(), batch).matmat(U)
    assert rel_err(y32, y64) <= 1e-4


def test_model_state_is_restored() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.BatchNorm1d(8), nn.Linear(8, 3)).double()
    x, y = torch.randn(6, 4, dtype=F64), torch.randint(0, 3, (6,))
    model.train()
    model[2].eval()
    model[0].bias.requires_grad_(False)
    stats = model[2].running_mean.clone()
    op = NTKOperator(model, (x, y))
    with torch.no_grad():  # a caller's no_grad must not break the products
        first = op.matmat(random_block(op.num_outputs, 2))
        with op:
            assert not any(m.training for m in model.modules())
            second = op.matmat(random_block(op.num_outputs, 2))
    assert torch.equal(first, second)  # dropout off: deterministic
    assert [m.training for m in model] == [True, True, False, True]
    assert [p.requires_grad for p in model.parameters()] == [True, False, True, True, True, True]
    assert torch.equal(model[2].running_mean, stats)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(specprobe.SpecprobeError), op:
        op.matmat(torch.zeros(3))
    assert model.training and not model[0].bias.requires_grad


class _NoForwardTanh(torch.autograd.Function):
    """tanh without a jvp rule: forward mode fails, double backward works."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: torch.Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * (1 - y * y)


class _OnceTanh(torch.autograd.Function):
    """tanh whose backward is not differentiable: a double backward silently drops it."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: torch.Tensor) -> None:
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * (1 - y * y)

    @staticmethod
    def jvp(ctx: torch.autograd.function.FunctionCtx, tangent: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return tangent * (1 - y * y)


class _WithFunction(nn.Module):
    def __init__(self, fn: type[torch.autograd.Function]) -> None:
        super().__init__()
        self.inner = mlp(4, 3)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner[2](self.fn.apply(self.inner[0](x)))


def _reference_model() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    model = mlp(4, 3).double()  # the same weights with plain tanh
    g = torch.Generator().manual_seed(5)
    return model, (torch.randn(5, 4, generator=g, dtype=F64), torch.randint(0, 3, (5,), generator=g))


def test_auto_mode_falls_back_without_forward_mode() -> None:
    ref_model, batch = _reference_model()
    ref = specprobe.dense_kernel(ref_model, batch)
    model = _WithFunction(_NoForwardTanh).double()
    op = NTKOperator(model, batch, cache_graph=False)  # AUTO prefers JVP without a cached graph
    U = random_block(op.num_outputs, 3)
    assert rel_err(op.matmat(U), ref.theta @ U) <= 1e-12
    assert op.mode_used is ProductMode.DOUBLE_VJP and op.fallback_reason is not None
    with pytest.raises(specprobe.SpecprobeError, match="mode 'jvp' failed"):
        NTKOperator(model, batch, mode="jvp", verify=False).matmat(U)


def test_silently_wrong_double_backward_is_caught() -> None:
    ref_model, batch = _reference_model()
    ref = specprobe.dense_kernel(ref_model, batch)
    model = _WithFunction(_OnceTanh).double()
    U = random_block(15, 3)
    op = NTKOperator(model, batch)  # AUTO prefers DOUBLE_VJP with a cached graph
    assert rel_err(op.matmat(U), ref.theta @ U) <= 1e-12
    assert op.mode_used is ProductMode.JVP
    assert "inconsistent" in (op.fallback_reason or "")
    with pytest.raises(specprobe.SpecprobeError, match="expected products consistent with the Jacobian"):
        NTKOperator(model, batch, mode="double_vjp").matmat(U)
    # Without the check the double backward is wrong, yet symmetric (it drops the first
    # layer's part of J·w, leaving the last layer's kernel): the check compares quadratic
    # forms with ‖Jᵀz‖², which a symmetry test could not.
    unchecked = NTKOperator(model, batch, mode="double_vjp", verify=False)
    assert rel_err(unchecked.matmat(U), ref.theta @ U) > 1e-3
    assert unchecked.check_symmetry(U[:, 0], U[:, 1]) <= 1e-12


def test_matrix_operator_interface() -> None:
    theta = random_block(6, 6)
    theta = theta @ theta.T
    op = MatrixOperator(theta, residual=torch.ones(6))
    Z = random_block(6, 2, seed=9)
    assert torch.allclose(op.matmat(Z), theta @ Z)
    assert torch.allclose(op.quadratic_form(Z), (Z * (theta @ Z)).sum(0))
    assert op.products == 2 and op.quadratic_forms == 2 and op.shape == (6, 6)


# ---- bad input ----------------------------------------------------------------------------


def test_bad_vector_shape() -> None:
    model, batch = CASES[0].build(F64)
    op = NTKOperator(model, batch)
    with pytest.raises(specprobe.SpecprobeError, match=r"shape \(D,\) or \(D, b\) with D=14") as err:
        op.matmat(torch.zeros(13, 2))
    assert "outputs[mask]" in err.value.hint


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "forward"}, "unknown product mode 'forward'; expected one of: auto, jvp, double_vjp"),
        ({"micro_batch_size": 0}, "micro_batch_size >= 1"),
        ({"vector_batch_size": 0}, "vector_batch_size >= 1"),
        ({"params": "nothing.*"}, "matches no parameter name"),
    ],
)
def test_bad_settings(kwargs: dict, message: str) -> None:
    model, batch = CASES[0].build(F64)
    with pytest.raises(specprobe.SpecprobeError, match=message):
        NTKOperator(model, batch, **kwargs)


def test_all_outputs_masked() -> None:
    model, _ = CASES[2].build(F64)
    batch = lm_batch(pad=False)
    batch["labels"] = torch.full_like(batch["input_ids"], -100)
    with pytest.raises(specprobe.BatchError, match="every output masked"):
        NTKOperator(model, batch)


def test_parameters_that_do_not_reach_the_outputs() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(3, 2)).double()
    x, y = torch.randn(4, 3, dtype=F64), torch.randn(4, 2, dtype=F64)

    def first_only(mod: nn.Module, batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        return mod[0](batch[0]), batch[1]

    op = NTKOperator(model, (x, y), adapter=specprobe.CallableAdapter(first_only, loss="mse"), params="1.*")
    with pytest.raises(specprobe.SpecprobeError, match="depend on the selected parameters"):
        op.matmat(random_block(8, 1))


def test_one_column_per_pass_still_catches_a_wrong_double_backward() -> None:
    # The check goes through the products vector_batch_size columns at a time; with one
    # column per pass it compares the quadratic forms alone, which still catch the drop.
    ref_model, batch = _reference_model()
    ref = specprobe.dense_kernel(ref_model, batch)
    op = NTKOperator(_WithFunction(_OnceTanh).double(), batch, vector_batch_size=1)
    U = random_block(15, 3)
    assert rel_err(op.matmat(U), ref.theta @ U) <= 1e-12
    assert op.mode_used is ProductMode.JVP and op.products == 2 + 2 + 3  # the check, again in JVP, U


@pytest.mark.parametrize("case", CASES[:4], ids=lambda c: c.name)
def test_gram_of_the_first_half_is_summed_per_tensor_in_float64(case: Case) -> None:
    model, batch = case.build(F64)
    ref = specprobe.dense_kernel(model, batch)
    op = NTKOperator(model, batch)
    Z = random_block(op.num_outputs, 3, seed=4)
    expected = (ref.jacobian.T @ Z).T @ (ref.jacobian.T @ Z)  # (JᵀZ)ᵀ(JᵀZ) from the dense J
    with op:
        product, gram = op._product(Z, gram=True)
        forms = op.quadratic_form(Z)
        flat = torch.cat([t.reshape(3, -1) for t in op._vjp_block(Z)], 1)  # the reference joins them
    assert rel_err(gram, flat @ flat.T) <= 1e-12  # the same Jᵀz, summed per tensor
    assert float((forms - (flat * flat).sum(1)).abs().max() / forms.abs().max()) <= 1e-12
    assert rel_err(gram, expected) <= 1e-10 and rel_err(product, ref.theta @ Z) <= 1e-10


def test_gram_and_norms_take_float32_tensors_slice_by_slice_in_float64() -> None:
    # An embedding-sized float32 tensor: float32 sums over millions of entries lose ~1e-4;
    # the slices are converted to float64, so the result matches a float64 reference.
    g = torch.Generator().manual_seed(0)
    w = [torch.randn(2, 3 * GRAM_SLICE + 5, generator=g) + 1.0, torch.randn(2, 7, 3, generator=g)]
    flat = torch.cat([t.reshape(2, -1).double() for t in w], 1)
    expected = flat @ flat.T
    assert rel_err(gram_matrix(w), expected) <= 1e-12
    assert rel_err(squared_norms(w), expected.diagonal()) <= 1e-12


def test_the_product_check_joins_no_parameter_sized_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    # Memory: the check's Gram matrix is summed per tensor, never over a concatenated
    # parameter-sized vector (which held ~32 bytes per parameter on a 160m model).
    model, batch = CASES[2].build(F64)
    op = NTKOperator(model, batch, vector_batch_size=2)
    joined: list[int] = []
    real_cat = torch.cat

    def spy(tensors, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = real_cat(tensors, *args, **kwargs)
        joined.append(out.numel())
        return out

    monkeypatch.setattr(torch, "cat", spy)
    op.matmat(random_block(op.num_outputs, 2))
    assert op.products == 4 and op._verified
    assert max(joined, default=0) < op.num_params


def test_default_columns_per_pass_follow_the_memory_budget() -> None:
    model, batch = CASES[2].build(F64)
    assert NTKOperator(model, batch).vector_batch_size == 16  # a tiny model: 16 columns fit
    assert _columns_per_pass(torch.device("cpu"), COLUMN_BUDGET // 3) == 3
    assert _columns_per_pass(torch.device("cpu"), 70_000_000 * 4) == 1  # a 70m model: one w at a time


def test_the_cached_first_backward_keeps_graph_edges_not_parameter_sized_values() -> None:
    # DOUBLE_VJP's cached Jᵀu is built at u = 0: its values are zeros and only its graph is
    # used, so the cache keeps autograd edges (no P numbers held), and products stay exact.
    model, batch = CASES[2].build(F64)
    ref = specprobe.dense_kernel(model, batch)
    with NTKOperator(model, batch, mode="double_vjp") as op:
        U = random_block(op.num_outputs, 3)
        assert rel_err(op.matmat(U), ref.theta @ U) <= 1e-10
        cached = [e for part in op._parts for e in (part.first_vjp or []) if e is not None]
        assert cached and not any(isinstance(e, torch.Tensor) for e in cached)
        assert rel_err(op.matmat(U), ref.theta @ U) <= 1e-10  # the edges serve every product

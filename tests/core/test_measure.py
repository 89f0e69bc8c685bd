"""specprobe.measure against the dense reference (explicit J and Θ) in float64."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import specprobe
from specprobe.core.adapters import slice_batch
from tests.conftest import CASES, HEAD_CASES, Case, lm_batch, mlp

F64 = torch.float64
FIELDS = ["loss", "grad_norm_sq", "chi_loss", "chi_net", "spectral_position"]


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.mark.parametrize("case", CASES + HEAD_CASES, ids=lambda c: c.name)
def test_exact_matches_dense_reference(case: Case) -> None:
    # Llama's eager attention takes its softmax in float32 even in a float64 model, so its
    # gradients agree to ~1e-8 rather than ~1e-15: still well inside the 1e-6 asked for.
    model, batch = case.build(F64)
    ref = specprobe.dense_kernel(model, batch, params=case.params)
    m = specprobe.measure(model, batch, estimator="exact", params=case.params)
    for field in FIELDS:
        assert rel(getattr(m, field), getattr(ref, field)) <= 1e-6, field
    assert m.num_outputs == ref.jacobian.shape[0]
    assert m.num_params == ref.jacobian.shape[1]
    assert m.chi_net_stderr == 0.0 and m.spectral_position_stderr == 0.0
    assert m.dtype == "float64"


def test_counted_outputs_follow_the_mask() -> None:
    model, batch = CASES[2].build(F64)  # gpt_neox_padded: lengths 7, 5, 3
    m = specprobe.measure(model, batch, estimator="exact")
    # Each sequence of length L predicts L - 1 tokens; V = 32 logits each.
    assert m.num_tokens == 6 + 4 + 2
    assert m.num_outputs == 12 * 32
    assert m.num_samples == 3


def test_tied_embedding_sums_both_uses() -> None:
    # GPT-2's head is its input embedding: selecting it by either name gives the same
    # parameter, and its Jacobian includes the input use (it differs from a head-only one).
    model, batch = CASES[3].build(F64)
    by_head = specprobe.measure(model, batch, estimator="exact", params="lm_head.*")
    by_input = specprobe.measure(model, batch, estimator="exact", params="transformer.wte.*")
    assert by_head.chi_net == pytest.approx(by_input.chi_net, rel=1e-12)
    ref = specprobe.dense_kernel(model, batch, params="lm_head.*")
    hidden = model.transformer(**batch).last_hidden_state.detach()
    logits_only = (hidden[batch["attention_mask"].bool()] ** 2).sum() * model.config.vocab_size
    assert ref.chi_net == pytest.approx(by_head.chi_net, rel=1e-10)
    # Θ over the head's use alone would be Σ_t ‖h_t‖²·V; the input use adds to it.
    assert by_head.chi_net > float(logits_only) * (1 + 1e-6)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_identities_of_the_decomposition(case: Case) -> None:
    model, batch = case.build(F64)
    ref = specprobe.dense_kernel(model, batch)
    g, theta, lam = ref.residual, ref.theta, ref.eigenvalues
    assert rel(ref.grad_norm_sq, float(g @ theta @ g)) <= 1e-10  # ‖∇L‖² = gᵀΘg
    assert rel(ref.chi_net, float(lam.sum())) <= 1e-10  # Tr Θ = Σ λ_k
    q = ref.overlaps
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-10)
    position = float((lam / ref.chi_net * q).sum())  # χ_pos = Σ (λ_k / TrΘ) q_k
    assert rel(ref.spectral_position, position) <= 1e-8
    assert float(lam[-1]) / ref.chi_net - 1e-12 <= ref.spectral_position <= float(lam[0]) / ref.chi_net
    m = specprobe.measure(model, batch, estimator="exact")
    assert rel(m.grad_norm_sq, m.chi_loss * m.chi_net * m.spectral_position) <= 1e-12


def test_position_is_invariant_to_loss_scale() -> None:
    model, batch = CASES[1].build(F64)
    ref = specprobe.dense_kernel(model, batch)
    scaled = dataclasses.replace(ref, residual=7.5 * ref.residual)
    assert scaled.grad_norm_sq == pytest.approx(56.25 * ref.grad_norm_sq, rel=1e-12)
    assert scaled.spectral_position == pytest.approx(ref.spectral_position, rel=1e-12)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_batch_order_does_not_matter(case: Case) -> None:
    model, batch = case.build(F64)
    n = specprobe.core.adapters.batch_size(batch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    if isinstance(batch, dict):
        shuffled = {k: v[perm] for k, v in batch.items()}
    else:
        shuffled = tuple(t[perm] for t in batch)
    a = specprobe.measure(model, batch, estimator="exact")
    b = specprobe.measure(model, shuffled, estimator="exact")
    for field in FIELDS:
        assert rel(getattr(a, field), getattr(b, field)) <= 1e-10, field


@pytest.mark.parametrize("estimator", ["exact", "hutchinson", "hutchinson_per_sample"])
def test_micro_batching_gives_the_same_numbers(estimator: str) -> None:
    model, batch = CASES[2].build(F64)
    whole = specprobe.measure(model, batch, estimator=estimator, probes=8, micro_batch_size=3)
    for micro in (1, 2):
        part = specprobe.measure(model, batch, estimator=estimator, probes=8, micro_batch_size=micro)
        for field in [*FIELDS, "chi_net_stderr"]:
            assert getattr(part, field) == pytest.approx(getattr(whole, field), rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("estimator", ["hutchinson", "hutchinson_per_sample"])
def test_hutchinson_is_unbiased_and_its_stderr_is_honest(estimator: str) -> None:
    model, batch = CASES[2].build(F64)
    exact = specprobe.measure(model, batch, estimator="exact").chi_net
    runs = [specprobe.measure(model, batch, estimator=estimator, probes=16, seed=s) for s in range(40)]
    estimates = np.array([r.chi_net for r in runs])
    reported = np.array([r.chi_net_stderr for r in runs])
    mean_se = estimates.std(ddof=1) / np.sqrt(len(runs))
    assert abs(estimates.mean() - exact) <= 3 * mean_se
    # The reported standard error of one run matches the spread across runs.
    ratio = reported.mean() / estimates.std(ddof=1)
    assert 0.7 <= ratio <= 1.4, ratio
    pos = runs[0]
    assert pos.spectral_position_stderr == pytest.approx(
        pos.spectral_position * pos.chi_net_stderr / pos.chi_net, rel=1e-12
    )


def test_per_sample_probes_have_lower_variance() -> None:
    model, batch = CASES[2].build(F64)
    spread = {}
    for estimator in ("hutchinson", "hutchinson_per_sample"):
        runs = [specprobe.measure(model, batch, estimator=estimator, probes=8, seed=s) for s in range(20)]
        spread[estimator] = np.std([r.chi_net for r in runs])
    assert spread["hutchinson_per_sample"] < spread["hutchinson"]


def test_seed_makes_hutchinson_reproducible() -> None:
    model, batch = CASES[0].build(F64)
    a = specprobe.measure(model, batch, probes=4, seed=11)
    b = specprobe.measure(model, batch, probes=4, seed=11)
    c = specprobe.measure(model, batch, probes=4, seed=12)
    assert a.chi_net == b.chi_net and a.chi_net != c.chi_net
    drawn = specprobe.measure(model, batch, probes=4, seed=None)
    assert drawn.seed is not None
    assert specprobe.measure(model, batch, probes=4, seed=drawn.seed).chi_net == drawn.chi_net


def test_model_state_is_restored() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3)
    ).double()
    x, y = torch.randn(6, 4, dtype=F64), torch.randint(0, 3, (6,))
    model.train()
    model[2].eval()  # a mixed state must come back as it was
    model[0].bias.requires_grad_(False)
    model(x).sum().backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    stats = model[2].running_mean.clone()
    with torch.no_grad():  # a caller's no_grad must not break the measurement
        m1 = specprobe.measure(model, (x, y), estimator="exact")
    assert [mod.training for mod in model] == [True, True, False, True]
    assert [p.requires_grad for p in model.parameters()] == [True, False, True, True, True, True]
    for n, p in model.named_parameters():
        expected = grads[n]
        assert (p.grad is None and expected is None) or torch.equal(p.grad, expected)
    assert torch.equal(model[2].running_mean, stats)
    # Dropout was off while measuring: the same numbers as in eval mode.
    m2 = specprobe.measure(model.eval(), (x, y), estimator="exact")
    assert m1.chi_net == pytest.approx(m2.chi_net, rel=1e-12)
    assert m1.num_params == 8 * 4 + 8 + 8 + 8 * 3 + 3  # the frozen bias is not selected


def test_state_is_restored_after_an_error() -> None:
    model = mlp(4, 3).double().train()
    x = torch.randn(3, 4, dtype=F64)
    with pytest.raises(specprobe.BatchError):
        specprobe.measure(model, (x, torch.full((3,), -100)))
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_float32_model_accumulates_and_agrees() -> None:
    model, batch = CASES[2].build(torch.float32)
    m32 = specprobe.measure(model, batch, estimator="exact")
    m64 = specprobe.measure(model.double(), batch, estimator="exact")
    assert m32.dtype == "float32"
    for field in FIELDS:
        assert rel(getattr(m32, field), getattr(m64, field)) <= 1e-4, field


def test_bfloat16_model_runs_in_its_dtype() -> None:
    model, batch = CASES[2].build(torch.bfloat16)
    m = specprobe.measure(model, batch, probes=4)
    ref = specprobe.measure(model.double(), batch, probes=4)
    assert m.dtype == "bfloat16"
    assert m.chi_loss == pytest.approx(ref.chi_loss, rel=0.05)
    assert m.spectral_position == pytest.approx(ref.spectral_position, rel=0.2)


def test_callable_adapter_for_custom_models() -> None:
    model = mlp(4, 2).double()
    x, y = torch.randn(5, 4, dtype=F64), torch.randn(5, 2, dtype=F64)

    def adapter(mod: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return mod(batch["features"]), batch["y"]

    custom = specprobe.measure(
        model,
        {"features": x, "y": y},
        adapter=specprobe.CallableAdapter(adapter, loss="mse"),
        estimator="exact",
    )
    builtin = specprobe.measure(model, (x, y), estimator="exact")
    assert custom.chi_net == pytest.approx(builtin.chi_net, rel=1e-12)
    assert custom.adapter == "custom" and builtin.adapter == "regression"


def test_labels_minus_100_remove_positions() -> None:
    model, batch = CASES[2].build(F64)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[0, 3] = -100  # row 2 of sample 0 now has no target
    m = specprobe.measure(model, {**batch, "labels": labels}, estimator="exact")
    assert m.num_tokens == 11
    ref = specprobe.dense_kernel(model, {**batch, "labels": labels})
    assert rel(m.spectral_position, ref.spectral_position) <= 1e-8


# ---- bad input: each a SpecprobeError with a hint, never a NaN result --------------------


def test_empty_batch() -> None:
    model, batch = CASES[0].build(F64)
    empty = slice_batch(batch, 0, 0, 7)
    with pytest.raises(specprobe.BatchError, match="at least one sample") as err:
        specprobe.measure(model, empty)
    assert err.value.hint


def test_all_targets_masked() -> None:
    model, _ = CASES[2].build(F64)
    batch = lm_batch(pad=False)
    batch["labels"] = torch.full_like(batch["input_ids"], -100)
    with pytest.raises(specprobe.BatchError, match="every output masked"):
        specprobe.measure(model, batch)


def test_nan_outputs() -> None:
    model, batch = CASES[1].build(F64)
    with torch.no_grad():
        model[2].bias[0] = float("nan")
    with pytest.raises(specprobe.NonFiniteError, match="NaN or inf"):
        specprobe.measure(model, batch)


def test_a_left_padded_mask_measures_finite() -> None:
    """A left-padded mask gave NaN (pad queries with nothing to attend to); it runs
    right-padded now, so it is finite."""
    model, batch = CASES[2].build(F64)
    batch["attention_mask"] = batch["attention_mask"].flip(1)
    m = specprobe.measure(model, batch, estimator="exact")
    assert np.isfinite(m.spectral_position)


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (torch.randint(0, 3, (9, 2)), "targets of shape"),
        (torch.randn(9), "integer class indices"),
        (torch.full((9,), 5), r"class indices in \[0, 3\)"),
    ],
)
def test_mismatched_targets(targets: torch.Tensor, message: str) -> None:
    model, (x, _) = CASES[1].build(F64)
    with pytest.raises(specprobe.BatchError, match=message):
        specprobe.measure(model, (x, targets), adapter="classification")


def test_regression_shape_mismatch() -> None:
    model, (x, y) = CASES[0].build(F64)
    with pytest.raises(specprobe.BatchError, match="MSE targets of the output shape"):
        specprobe.measure(model, (x, y[:, :1]))


def test_exact_refuses_large_outputs() -> None:
    model, batch = CASES[2].build(F64)
    with pytest.raises(specprobe.TooLargeError, match="max_exact_outputs=100") as err:
        specprobe.measure(model, batch, estimator="exact", max_exact_outputs=100)
    assert "hutchinson" in err.value.hint


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"estimator": "hutchinsen"}, "unknown estimator 'hutchinsen'; expected one of: exact"),
        ({"probes": 1}, "at least 2 Hutchinson probes"),
        ({"params": "nothing.*"}, "matches no parameter name"),
        ({"adapter": "seq2seq"}, "unknown adapter 'seq2seq'"),
        ({"micro_batch_size": 0}, "micro_batch_size >= 1"),
    ],
)
def test_bad_settings(kwargs: dict, message: str) -> None:
    model, batch = CASES[0].build(F64)
    with pytest.raises(specprobe.SpecprobeError, match=message):
        specprobe.measure(model, batch, **kwargs)


def test_unknown_batch_type() -> None:
    with pytest.raises(specprobe.BatchError, match="cannot tell how to read"):
        specprobe.measure(mlp(2, 2), [torch.zeros(2, 2)] * 3)


def test_measurement_to_dict_round_trips() -> None:
    model, batch = CASES[0].build(F64)
    m = specprobe.measure(model, batch, probes=4, params=["0.*"])
    record = m.to_dict()
    assert record["params"] == ["0.*"] and record["estimator"] == "hutchinson_per_sample"  # the CLI's default
    assert m.normalized_position == pytest.approx(m.num_outputs * m.spectral_position)


# ---- layer decomposition: Θ = Σ_g J_g J_gᵀ -------------------------------------------------


@pytest.mark.parametrize("estimator", ["exact", "hutchinson", "hutchinson_per_sample"])
def test_groups_add_up_to_the_totals(estimator: str) -> None:
    model, batch = CASES[2].build(F64)
    m = specprobe.measure(model, batch, estimator=estimator, probes=8, groups="auto", micro_batch_size=2)
    assert m.groups is not None
    assert [g.name for g in m.groups] == ["embeddings", "block 0", "block 1", "final norm", "head"]
    assert sum(g.chi_net for g in m.groups) == pytest.approx(m.chi_net, rel=1e-12)
    assert sum(g.grad_norm_sq for g in m.groups) == pytest.approx(m.grad_norm_sq, rel=1e-12)
    assert sum(g.num_params for g in m.groups) == m.num_params
    assert sum(g.chi_net_share for g in m.groups) == pytest.approx(1.0, rel=1e-12)


def test_head_group_is_the_frozen_feature_counterfactual() -> None:
    model, batch = CASES[2].build(F64)
    full = specprobe.measure(model, batch, estimator="exact", groups="auto")
    head_only = specprobe.measure(model, batch, estimator="exact", params="lm_head.*")
    assert full.groups is not None
    (head,) = [g for g in full.groups if g.name == "head"]
    assert head.chi_net == pytest.approx(head_only.chi_net, rel=1e-10)
    assert head.grad_norm_sq == pytest.approx(head_only.grad_norm_sq, rel=1e-10)
    assert head.spectral_position == pytest.approx(head_only.spectral_position, rel=1e-10)
    ref = specprobe.dense_kernel(model, batch, params="lm_head.*")
    assert head.spectral_position == pytest.approx(ref.spectral_position, rel=1e-8)


def test_custom_groups_and_bad_group_spec() -> None:
    model, batch = CASES[2].build(F64)
    m = specprobe.measure(
        model, batch, estimator="exact", groups={"attention": ["*.attention.*"], "mlp": "*.mlp.*"}
    )
    assert m.groups is not None
    assert [g.name for g in m.groups] == ["other", "attention", "mlp"]
    assert sum(g.chi_net for g in m.groups) == pytest.approx(m.chi_net, rel=1e-12)
    with pytest.raises(specprobe.ParameterSelectionError, match="groups='auto' or a mapping"):
        specprobe.measure(model, batch, groups="layers")


def test_outputs_that_cannot_be_adapted_name_the_adapter_to_use() -> None:
    class DictModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.lin(x)}

    model = DictModel().double()
    x, y = torch.randn(5, 4, dtype=F64), torch.randint(0, 3, (5,))
    with pytest.raises(specprobe.BatchError, match="found dict") as err:
        specprobe.measure(model, (x, y))
    assert "CallableAdapter" in err.value.hint
    adapter = specprobe.CallableAdapter(lambda m, b: (m(b[0])["logits"], b[1]), loss="cross_entropy")
    m = specprobe.measure(model, (x, y), adapter=adapter, estimator="exact")
    assert m.chi_net == pytest.approx(
        specprobe.dense_kernel(model, (x, y), adapter=adapter).chi_net, rel=1e-10
    )

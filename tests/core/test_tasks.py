"""The tasks beyond the causal LM against an independent dense float64 reference: one
backward pass per counted output on the task's own loss, computed from the Hugging Face
model's own call (no specprobe adapter), for masked LMs, seq2seq models and image
classifiers, with masks and padding; and the masks and spans drawn per (seed, sample,
position), the same however the set is cut."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import specprobe
from specprobe.choices import Task
from specprobe.core.masking import MaskRecipe, SpanRecipe, mask_tokens, span_corrupt, span_mask
from specprobe.core.task_adapters import adapter_for
from specprobe.errors import BatchError
from specprobe.models.tiny_tasks import TinyTaskArch, tiny_task_model

F64 = torch.float64
V = 32


def model_of(arch: TinyTaskArch) -> torch.nn.Module:
    """The tiny model in float64. T5's layer norm takes its variance in float32 even in a
    float64 model (transformers' T5LayerNorm), which leaves two equal gradients apart by
    ~1e-8; here it takes it in float64, so that the comparison can ask for 1e-9."""
    model = tiny_task_model(arch, dtype=F64, vocab_size=V)
    for module in model.modules():
        if type(module).__name__ == "T5LayerNorm":

            def forward(x: torch.Tensor, norm: Any = module) -> torch.Tensor:
                return norm.weight * (
                    x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
                )

            module.forward = forward
    return model


def task_batch(arch: TinyTaskArch) -> dict[str, Any]:
    """A padded batch of the architecture's task: masked ids and labels (-100 where not
    masked, or padding), source and target with padding, images with one label not counted."""
    g = torch.Generator().manual_seed(1)
    if arch.task is Task.MASKED_LM:
        ids = torch.randint(4, V, (3, 7), generator=g)
        attention = torch.ones_like(ids)
        attention[1, 5:] = 0
        attention[2, 3:] = 0
        inputs, labels = mask_tokens(
            ids, attention.bool(), mask_token_id=3, vocab_size=V, seed=0, recipe=MaskRecipe(0.4)
        )
        return {"input_ids": inputs, "attention_mask": attention, "labels": labels}
    if arch.task is Task.SEQ2SEQ_LM:
        ids = torch.randint(3, V, (3, 6), generator=g)
        attention = torch.ones_like(ids)
        attention[1, 4:] = 0
        labels = torch.randint(3, V, (3, 4), generator=g)
        labels[2, 2:] = -100
        return {"input_ids": ids, "attention_mask": attention, "labels": labels}
    pixels = torch.randn(4, 3, 8, 8, generator=g, dtype=F64)
    return {"pixel_values": pixels, "labels": torch.tensor([0, 2, 1, -100])}


def reference(model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, float]:
    """The decomposition from the model's own call: the counted logits f (masked positions,
    real target positions, one row per labelled image), the mean cross-entropy L over them,
    g = ∂L/∂f by autograd, ‖∇θL‖² from one backward pass, and Tr Θ = Σ_i ‖∂f_i/∂θ‖² from one
    backward pass per counted output."""
    params = [p for p in model.parameters() if p.requires_grad]
    labels = batch["labels"]
    if "pixel_values" in batch:
        logits = model(pixel_values=batch["pixel_values"]).logits
    elif model.config.is_encoder_decoder:
        decoder_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=decoder_ids,
        ).logits
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    counted = labels != -100
    if "attention_mask" in batch and labels.shape == batch["attention_mask"].shape:
        counted &= batch["attention_mask"].bool()
    f = logits[counted]  # (rows, C)
    targets = labels[counted]
    loss = torch.nn.functional.cross_entropy(f, targets)
    (g,) = torch.autograd.grad(loss, f, retain_graph=True)
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    grad_norm_sq = float(sum(gr.square().sum() for gr in grads))
    trace = 0.0
    flat = f.reshape(-1)
    for i in range(flat.numel()):
        rows = torch.autograd.grad(flat[i], params, retain_graph=True, allow_unused=True)
        trace += float(sum(r.square().sum() for r in rows if r is not None))
    chi_loss = float(g.square().sum())
    return {
        "loss": float(loss.detach()),
        "grad_norm_sq": grad_norm_sq,
        "chi_loss": chi_loss,
        "chi_net": trace,
        "spectral_position": grad_norm_sq / (chi_loss * trace),
        "num_outputs": flat.numel(),
    }


@pytest.mark.parametrize("arch", list(TinyTaskArch), ids=lambda a: a.value)
def test_exact_matches_an_independent_dense_reference(arch: TinyTaskArch) -> None:
    model = model_of(arch)
    batch = task_batch(arch)
    ref = reference(model, batch)
    m = specprobe.measure(model, batch, estimator="exact", adapter=adapter_for(arch.task))
    assert m.num_outputs == ref["num_outputs"]
    for name in ("loss", "grad_norm_sq", "chi_loss", "chi_net", "spectral_position"):
        assert getattr(m, name) == pytest.approx(ref[name], rel=1e-9, abs=0), name
    # The counted rows are the task's: masked positions, real target tokens, labelled images.
    assert m.num_tokens == int((batch["labels"] != -100).sum())


@pytest.mark.parametrize("arch", list(TinyTaskArch), ids=lambda a: a.value)
def test_population_estimates_do_not_depend_on_the_micro_batch(arch: TinyTaskArch) -> None:
    model = model_of(arch)
    batch = task_batch(arch)
    adapter = adapter_for(arch.task)
    whole = specprobe.measure(model, batch, estimator="hutchinson_per_sample", probes=3, adapter=adapter)
    one = specprobe.measure(
        model, batch, estimator="hutchinson_per_sample", probes=3, adapter=adapter, micro_batch_size=1
    )
    assert whole.mean_grad_sq is not None
    for name in ("chi_net", "spectral_position", "mean_grad_sq", "population_position", "single_position"):
        if getattr(whole, name) is None:  # a noisy estimate: None in both
            assert getattr(one, name) is None, name
        else:
            assert getattr(one, name) == pytest.approx(getattr(whole, name), rel=1e-9), name


def test_per_sample_estimator_is_unbiased_on_every_task() -> None:
    # The ghost norms (or their fallbacks) on BERT, T5 and ViT layers: the mean over many
    # probes is within 4 standard errors of the exact trace.
    for arch in (TinyTaskArch.BERT, TinyTaskArch.T5, TinyTaskArch.VIT, TinyTaskArch.RESNET):
        model = model_of(arch)
        batch = task_batch(arch)
        adapter = adapter_for(arch.task)
        exact = specprobe.measure(model, batch, estimator="exact", adapter=adapter)
        est = specprobe.measure(model, batch, estimator="hutchinson_per_sample", probes=200, adapter=adapter)
        assert abs(est.chi_net - exact.chi_net) <= 4 * est.chi_net_stderr, arch


def test_masked_lm_batch_needs_its_labels() -> None:
    model = tiny_task_model("bert", dtype=F64, vocab_size=V)
    with pytest.raises(BatchError, match="masked-LM batch with input_ids, labels"):
        specprobe.measure(model, {"input_ids": torch.ones(2, 5, dtype=torch.long)}, adapter="masked_lm")


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 6),
    s=st.integers(2, 24),
    seed=st.integers(0, 2**20),
    cut=st.integers(0, 6),
    rate=st.floats(0.05, 1.0),
)
def test_masks_are_those_of_each_sequence_whatever_the_cut(
    n: int, s: int, seed: int, cut: int, rate: float
) -> None:
    # The masks of a set equal the masks drawn for any slice of it, given its first index:
    # the same for every micro-batch and process. Every sequence has a masked position, only
    # maskable ones are masked, the labels hold the original tokens there.
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (n, s), generator=g)
    maskable = torch.rand(n, s, generator=g) < 0.8
    maskable[:, 0] = True
    kwargs: dict[str, Any] = {"mask_token_id": 4, "vocab_size": 50, "seed": seed, "recipe": MaskRecipe(rate)}
    inputs, labels = mask_tokens(ids, maskable, **kwargs)
    cut = min(cut, n)
    head = mask_tokens(ids[:cut], maskable[:cut], **kwargs)
    tail = mask_tokens(ids[cut:], maskable[cut:], first_sample=cut, **kwargs)
    assert torch.equal(torch.cat([head[0], tail[0]]), inputs)
    assert torch.equal(torch.cat([head[1], tail[1]]), labels)
    masked = labels != -100
    assert bool(masked.any(dim=1).all()) and not bool((masked & ~maskable).any())
    assert torch.equal(labels[masked], ids[masked])
    assert torch.equal(inputs[~masked], ids[~masked])


def test_bert_recipe_fractions() -> None:
    # 15 % of the positions, of those 80 % [MASK], 10 % random, 10 % unchanged (to sampling error).
    ids = torch.randint(5, 1000, (200, 100), generator=torch.Generator().manual_seed(0))
    inputs, labels = mask_tokens(
        ids, torch.ones_like(ids, dtype=torch.bool), mask_token_id=4, vocab_size=1000, seed=7
    )
    masked = labels != -100
    rate = float(masked.float().mean())
    assert rate == pytest.approx(0.15, abs=0.005)
    as_mask = float((inputs[masked] == 4).float().mean())
    kept = float((inputs[masked] == ids[masked]).float().mean())
    assert as_mask == pytest.approx(0.8, abs=0.02)
    assert kept == pytest.approx(0.1 + 0.1 / 1000, abs=0.015)


@settings(max_examples=25, deadline=None)
@given(length=st.integers(4, 80), seed=st.integers(0, 2**20), sample=st.integers(0, 1000))
def test_span_corruption_is_t5s(length: int, seed: int, sample: int) -> None:
    mask = span_mask(length, seed, sample)
    noise = min(max(round(length * 0.15), 1), length - 1)
    spans = max(min(round(noise / 3.0), noise, length - noise), 1)
    assert int(mask.sum()) == noise
    assert not mask[0]  # the text starts with a kept stretch
    starts = int((mask[1:] & ~mask[:-1]).sum())
    assert starts == spans
    ids = torch.arange(100, 100 + length).reshape(1, -1)
    sentinels = list(range(10, 10 + spans))
    source, target = span_corrupt(ids, sentinels=sentinels, eos_token_id=1, seed=seed, first_sample=sample)
    assert source.shape[1] == length - noise + spans + 1 and target.shape[1] == noise + spans + 1
    # Putting the spans back where the sentinels are gives the text again.
    pieces = {}
    current = None
    for token in target[0, :-1].tolist():
        if token in sentinels:
            current = token
            pieces[current] = []
        else:
            pieces[current].append(token)
    rebuilt = [
        t for token in source[0, :-1].tolist() for t in (pieces[token] if token in sentinels else [token])
    ]
    assert rebuilt == ids[0].tolist()
    assert span_mask(length, seed, sample, SpanRecipe()).tolist() == mask.tolist()

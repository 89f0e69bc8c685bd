"""Ghost norms against a second, independent reference: Opacus's per-sample gradients.

``opacus.GradSampleModule`` computes each sample's gradient of every parameter (its own
grad samplers for Linear, Embedding and LayerNorm, torch.func for the rest, such as
transformers' ``Conv1D`` and ``LlamaRMSNorm``), summing the uses of a tied weight. For one
cotangent z, Σ_s ‖∂(z_s·f_s)/∂p‖² per tensor p must equal what the ghost norms give from
activations and output gradients alone. Opacus comes with the dev extra (so CI runs this);
the test is skipped where it is not installed.
"""

from __future__ import annotations

import pytest
import torch

from specprobe.core.ghost import GhostNorms
from specprobe.core.params import measuring, select_parameters
from specprobe.core.probes import rademacher
from specprobe.models.tiny import tiny_causal_lm

opacus = pytest.importorskip("opacus")

F64 = torch.float64


class _Logits(torch.nn.Module):
    """The causal LM's logits as a tensor, with position ids given per sample (so GPT-2's
    position embedding sees a batch dimension, as a per-sample reference needs)."""

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1]).expand_as(ids)
        return self.lm(input_ids=ids, position_ids=positions, use_cache=False).logits  # type: ignore[no-any-return]


def _opacus_norms(model: torch.nn.Module, ids: torch.Tensor, z: torch.Tensor) -> dict[str, float]:
    """Σ_s ‖per-sample gradient of z_s·f_s‖² per parameter name, by Opacus."""
    gsm = opacus.GradSampleModule(_Logits(model), batch_first=True, loss_reduction="sum", strict=False)
    # Opacus records only modules in training mode: those owning parameters (no dropout,
    # which GPT-2's blocks and attention would apply in training mode).
    for module in model.modules():
        module.train(any(True for _ in module.parameters(recurse=False)))
    # Opacus's Embedding sampler allocates its per-sample gradients in the default dtype
    # (opacus 1.5.4), which must then be the model's float64.
    default = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        (gsm(ids) * z).sum().backward()
        out = {}
        for name, p in model.named_parameters():
            sample = p.grad_sample  # (samples, *p.shape), tied uses summed
            out[name] = float(sample.reshape(sample.shape[0], -1).square().sum())
    finally:
        torch.set_default_dtype(default)
        gsm._close()
        model.eval()
    return out


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_ghost_norms_equal_opacus_per_sample_gradients(arch: str) -> None:
    model = tiny_causal_lm(arch, vocab_size=32, hidden_size=8, dtype=F64)
    if arch == "gpt2":
        assert model.lm_head.weight is model.transformer.wte.weight  # tied, and Conv1D blocks
    ids = torch.randint(0, 32, (3, 6), generator=torch.Generator().manual_seed(0))
    wrapped = _Logits(model)
    selected = select_parameters(model, None)
    params = [p for _, p in selected]
    with measuring(model, selected), GhostNorms(model, params, F64) as ghost:
        ghost.reset(ids.shape[0])
        f = wrapped(ids)
        z = rademacher(5, range(ids.shape[0]), range(2), f.shape[1:], dtype=F64)  # (2, *f.shape)
        got = ghost.norms(f, z, per_sample=True).numpy()
        assert ghost._plan(f).fallback == []  # every tensor by a ghost rule, none by the fallback
    for j in range(z.shape[0]):
        want = _opacus_norms(model, ids, z[j])
        model.zero_grad(set_to_none=True)
        for i, (name, _) in enumerate(selected):
            assert got[j, i] == pytest.approx(want[name], rel=1e-10, abs=1e-14), (arch, name)

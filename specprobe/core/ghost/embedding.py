"""Embeddings, and a weight tied between an embedding and a linear head.

* Embedding E: Σ_{t,t'} [id_t = id_t'] (δ_t·δ_t'), as ‖Σ_u (Σ_{t: id_t = u} δ_t)‖² over the
  distinct ids u (padding_idx rows receive no gradient).
* A weight tied between an Embedding and a Linear head: the norm of the sum of both uses,
  the cross term ⟨G_E, G_H⟩ = Σ_u Σ_t' δ^H_t'[u] (a_t' · Σ_{t: id_t=u} δ^E_t) included.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from specprobe.core.ghost.registry import Call, Context, LayerRule, Tie, group, register_rule


@register_rule
class EmbeddingRule(LayerRule):
    """``nn.Embedding`` with its own forward, no ``max_norm`` and no ``scale_grad_by_freq``."""

    tie = Tie.TABLE

    @classmethod
    def matches(cls, module: nn.Module) -> bool:
        return (
            isinstance(module, nn.Embedding)
            and type(module).forward is nn.Embedding.forward
            and module.max_norm is None
            and not module.scale_grad_by_freq
        )

    def capture(self, x: Tensor, output: Tensor, samples: int) -> tuple[Tensor, Tensor, Tensor | None]:
        if x.dim() == 2 and x.shape[0] == 1 and samples > 1:
            # Position ids shared by the batch (GPT-2's wpe): the (1, T, d) output is
            # broadcast onto the samples downstream, so its gradient would be the sum over
            # them. Expanded here (a view, same values), its gradient is per sample.
            x = x.expand(samples, -1)
            output = output.expand(samples, *output.shape[1:])
            return x, output, output
        return x, output, None

    def param_norm(self, call: Call, name: str, d: Tensor, groups: int, ctx: Context) -> Tensor:
        sums, _, _ = embedding_sums(call, d, groups, ctx)
        return sums

    def param_inner(
        self, call: Call, name: str, direction: Tensor, d: Tensor, groups: int, ctx: Context
    ) -> Tensor:
        """⟨G_E, D⟩ = Σ_t δ_t · D[id_t] over the tokens whose row receives a gradient."""
        module = call.module
        assert isinstance(module, nn.Embedding)
        ids = call.input.reshape(groups, -1)  # (G, N)
        rows = direction[ids].to(ctx.acc)  # (G, N, dim): the looked-up rows cast, not the table
        if module.padding_idx is not None:
            rows = rows * (ids != module.padding_idx).unsqueeze(-1).to(rows.dtype)
        return (d * rows).sum((-1, -2))


def embedding_sums(call: Call, d: Tensor, groups: int, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
    """Per group: ‖Σ_u s_u‖², with s_u = Σ_{t: id_t = u} δ_t per distinct id u.

    Returns the norms ``(k, G)``, the sums ``(k, U, d)`` and each distinct key's
    (group, id) as a ``(U, 2)`` tensor; kept in ``ctx.scratch`` for the tied cross term.
    """
    cache = ctx.scratch
    if id(call) in cache:
        return cache[id(call)]
    module = call.module
    assert isinstance(module, nn.Embedding)
    ids = call.input.reshape(groups, -1)  # (G, N)
    vocab = module.num_embeddings
    keep = torch.ones_like(ids, dtype=torch.bool)
    if module.padding_idx is not None:
        keep = ids != module.padding_idx
    group_of = torch.arange(groups, device=ids.device).unsqueeze(1).expand_as(ids)
    keys = (group_of * vocab + ids)[keep]
    unique, inverse = torch.unique(keys, return_inverse=True)
    rows = d[:, keep]  # (k, M, dim) for the kept tokens, in (group, token) order
    sums = torch.zeros((d.shape[0], unique.numel(), d.shape[-1]), dtype=d.dtype, device=d.device)
    sums.index_add_(1, inverse, rows)
    norms = torch.zeros((d.shape[0], groups), dtype=d.dtype, device=d.device)
    norms.index_add_(1, unique // vocab, sums.square().sum(-1))
    result = (norms, sums, torch.stack([unique // vocab, unique % vocab], dim=1))
    cache[id(call)] = result
    return result


def tied_cross(
    e_call: Call, h_call: Call, e_delta: Tensor, h_delta: Tensor, groups: int, ctx: Context
) -> Tensor:
    """⟨G_E, G_H⟩ per group for a weight tied between an embedding and a linear head: ``(k, G)``."""
    acc = ctx.acc
    d_e = group(e_delta.to(acc), groups, lead=1)
    _, sums, keys = embedding_sums(e_call, d_e, groups, ctx)  # sums (k, U, dim)
    a = group(h_call.input.detach().to(acc), groups)  # (G, N', dim)
    d_h = group(h_delta.to(acc), groups, lead=1)  # (k, G, N', V)
    cross = torch.zeros((d_h.shape[0], groups), dtype=acc, device=d_h.device)
    for g in range(groups):
        members = (keys[:, 0] == g).nonzero().squeeze(1)
        if members.numel() == 0:
            continue
        ids = keys[members, 1]
        q = torch.einsum("nd,kud->knu", a[g], sums[:, members])  # a_t'·s_u
        picked = d_h[:, g][:, :, ids]  # δ^H_t'[u]: (k, N', U)
        cross[:, g] = (q * picked).sum((1, 2))
    return cross

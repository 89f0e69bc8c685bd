"""Squared norms ‖J_gᵀ z_g‖² per group of samples, without per-sample gradients ("ghost norms").

For a group g of samples (one sample, or the whole micro-batch) and a cotangent z on the
outputs, J_gᵀ z_g is the gradient the group's samples contribute. Its squared norm per
parameter tensor is what the Hutchinson estimators need, and it can be had from the
activations a_t entering each layer and the gradients δ_t leaving it at the group's tokens t,
without forming a parameter-sized gradient per group or per probe. One file per layer
rule, each registered with ``@register_rule`` (``registry``):

* ``linear``: Linear W (out × in): ‖Σ_t δ_t a_tᵀ‖² = Σ_{t,t'} (δ_t·δ_t')(a_t·a_t'), cost
  T²(in + out) per group, or the gradient δᵀa formed one group at a time when that is
  cheaper. Bias: ‖Σ_t δ_t‖². transformers' ``Conv1D`` (GPT-2) is a Linear with a
  transposed weight.
* ``embedding``: Embedding E: Σ_{t,t'} [id_t = id_t'] (δ_t·δ_t'), over the distinct ids
  (padding_idx rows receive no gradient); and a weight tied between an Embedding and a
  Linear head: the norm of the sum of both uses, the cross term included.
* ``norm``: elementwise scales (LayerNorm, RMSNorm, any ``*Norm`` whose parameters act per
  feature): the group's gradient, a d-vector, is formed from a forward-mode product, and
  the module is first checked to be elementwise in w.
* ``fallback``: everything else (other modules, a parameter used outside its module's
  call, a module called twice): a correct fallback, one backward pass per group w.r.t.
  those parameters.

Which parameter uses the hooks see is checked against the autograd graph itself
(``plan``): a parameter whose graph edges are not all accounted for by supported module
calls goes to the fallback, so a model that reuses a weight in its own code cannot be
measured wrongly.

The backward pass requests the gradients of the hooked modules' outputs (δ), never of the
parameters, so no weight gradient is computed: memory per probe is the size of those
outputs, like the activations a training step keeps.
"""

from __future__ import annotations

# The rules register themselves on import; a new layer type's file is imported here too.
from specprobe.core.ghost import embedding, linear, norm  # noqa: F401
from specprobe.core.ghost.norms import GhostNorms

__all__ = ["GhostNorms"]

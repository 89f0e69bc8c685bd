"""What ``measure`` returns: the decomposition of one batch, and a parameter group's part of it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GroupShare:
    """One parameter group's part of the decomposition.

    Θ = Σ_g J_g J_gᵀ, so χ_net and ‖∇θL‖² are exact sums of the groups' values. The group's
    ``spectral_position`` is the decomposition with θ restricted to the group,
    ‖∇_g L‖² / (χ_loss · χ_net,g): for the output head, the frozen-feature counterfactual.
    """

    name: str
    num_params: int
    chi_net: float
    chi_net_stderr: float
    grad_norm_sq: float
    spectral_position: float
    chi_net_share: float
    """χ_net,g / χ_net."""
    grad_norm_sq_share: float
    """‖∇_g L‖² / ‖∇θL‖²."""


@dataclass(frozen=True)
class Measurement:
    """The loss–network–position decomposition of one batch (names as in the README's "What the numbers mean").

    ``*_stderr`` fields are standard errors of the estimate (0 for exact quantities).
    ``spectral_position_stderr`` propagates the error of χ_net (the only estimated factor):
    se(χ_pos) = χ_pos · se(χ_net) / χ_net.
    """

    loss: float
    """L, the mean training loss over the counted outputs."""
    grad_norm_sq: float
    """‖∇θL‖² over the selected parameters (exact)."""
    chi_loss: float
    """χ_loss = ‖g‖², the size of the loss residual (exact)."""
    chi_net: float
    """χ_net = Tr Θ, the network's response (exact or estimated)."""
    chi_net_stderr: float
    spectral_position: float
    """χ_pos = ‖∇θL‖² / (χ_loss χ_net) ∈ [λ_min/TrΘ, λ_max/TrΘ]; 1/D for an unaligned residual."""
    spectral_position_stderr: float
    num_outputs: int
    """D, the number of counted raw outputs (counted rows × entries per row)."""
    num_params: int
    """P, the number of selected parameters."""
    num_samples: int
    """N, the number of samples (sequences) in the batch."""
    num_tokens: int
    """Counted output rows: predicted tokens for a language model, samples for a classifier."""
    estimator: str
    probes: int
    """Hutchinson probes (0 for the exact estimator)."""
    seed: int | None
    """Seed of the probes (None for the exact estimator)."""
    micro_batch_size: int
    adapter: str
    loss_kind: str
    dtype: str
    """The model's dtype; accumulation is in float64 for float64 models, float32 otherwise."""
    params: tuple[str, ...] | None
    """The parameter name patterns, or None for all trainable parameters."""
    time_s: float
    groups: tuple[GroupShare, ...] | None = None
    """The split of χ_net and ‖∇θL‖² by parameter group, when ``groups`` was given."""

    @property
    def normalized_position(self) -> float:
        """D · χ_pos: 1 for a residual with no alignment to the spectrum."""
        return self.num_outputs * self.spectral_position

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of all fields."""
        record = asdict(self)
        record["params"] = list(self.params) if self.params is not None else None
        return record

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
    population_position: float | None = None
    """The group's population position χ_pos,g^∞ = ‖M_g‖²^ / (R^ τ_g^), θ restricted to the
    group (for the head: the frozen-feature counterfactual of the population); None where
    :attr:`Measurement.population_position` is None."""
    population_position_stderr: float | None = None
    """Its delete-one-sequence jackknife standard error."""


@dataclass(frozen=True)
class Measurement:
    """The loss–network–position decomposition of one batch (names as in docs/concepts.md, "The fields of a measurement").

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
    # The population position (``specprobe.core.population``). With the per-sequence summed
    # loss ℓ_s, its residual r_s, v_s = J_sᵀ r_s, V = Σ_s v_s and τ_s = Tr Θ_ss over the n
    # sequences: ‖M‖²^ = (‖V‖² − Σ_s ‖v_s‖²) / (n(n−1)), A^ = Σ‖v_s‖²/n, R^ = Σ‖r_s‖²/n,
    # τ^ = Στ_s/n. Each estimate is None when the estimator gives no per-sequence trace
    # (plain ``hutchinson``), when ``population=False``, or when n < 2; each ``*_stderr`` is
    # the delete-one-sequence jackknife (it carries the per-sample probes' noise too).
    population_position: float | None = None
    """χ_pos^∞ = ‖M‖²^ / (R^ τ^): the position of the data's own gradient, free of n."""
    population_position_stderr: float | None = None
    normalized_population_position: float | None = None
    """(D/n)·χ_pos^∞, D the counted outputs: for a causal LM with full sequences (S−1)·V·χ_pos^∞;
    comparable across models with the same tokenizer and sequence length."""
    normalized_population_position_stderr: float | None = None
    noise_scale: float | None = None
    """B_noise = (A^ − ‖M‖²^) / ‖M‖²^, the gradient noise scale in sequences."""
    noise_scale_stderr: float | None = None
    noise_scale_tokens: float | None = None
    """B_noise × the counted tokens per sequence (num_tokens / num_samples)."""
    single_position: float | None = None
    """χ_pos(1) = A^ / (R^ τ^), the position of one sequence's batch."""
    single_position_stderr: float | None = None
    mean_grad_sq: float | None = None
    """‖M‖²^, unbiased for ‖E v_s‖² (per-sequence summed loss units; may be ≤ 0 by noise)."""
    mean_grad_sq_stderr: float | None = None
    population_status: str | None = None
    """A :class:`specprobe.core.population.PopulationStatus` value: ``ok``, ``noisy``
    (relative stderr of χ_pos^∞ above 0.5) or ``nonpositive`` (‖M‖²^ ≤ 0: more sequences
    needed; the position fields then hold the estimate ≤ 0 with its error, flagged by this
    status and never used as a reach; the noise-scale fields are None)."""
    sequences_needed: int | None = None
    """Sequences for a 10 % relative standard error of χ_pos^∞ (``specprobe.core.population``)."""
    loss_stderr: float | None = None
    """The standard error of ``loss`` over the sequences (delete-one-sequence jackknife of
    Σ_s ℓ_s / Σ_s n_s); None with fewer than two counted sequences."""

    def position_at(self, n: float) -> float | None:
        """χ_pos predicted for a batch of ``n`` sequences: χ_pos^∞ + (χ_pos(1) − χ_pos^∞)/n
        (None without the population estimates)."""
        if self.population_position is None or self.single_position is None:
            return None
        return self.population_position + (self.single_position - self.population_position) / n

    @property
    def normalized_position(self) -> float:
        """D · χ_pos: 1 for a residual with no alignment to the spectrum."""
        return self.num_outputs * self.spectral_position

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of all fields."""
        record = asdict(self)
        record["params"] = list(self.params) if self.params is not None else None
        return record

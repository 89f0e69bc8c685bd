"""Measurements → the numbers of a record: the decomposition, the population position and
χ_pos at the training batch, for either way of measuring a subset (:class:`Measuring`).

``whole`` (one measurement of the whole subset): every field is the measurement's own.
``batches`` (the mean over batches, the way before issue 18): each value is the mean over
the batches with a standard error — with several batches the spread of the batch values
over √batches (it includes the probes' noise), with one batch the measurement's own. For
the population fields of ``batches`` that rule applies where every batch has the value;
where a batch has none (its ‖M‖²^ ≤ 0, as batches of n ≪ B_noise often do) the record's is
None. ``noise_scale``, ``noise_scale_stderr``, ``noise_scale_tokens`` and
``sequences_needed`` are None for ``batches``: a ratio over a per-batch ‖M‖²^ that is
mostly noise has no useful mean; measure ``whole`` for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from specprobe.config import Measuring
from specprobe.core.measure import Measurement
from specprobe.core.population import NOISY_ABOVE, PopulationStatus
from specprobe.store.records import GroupRow, Record

POPULATION_MEANS = (
    "population_position",
    "normalized_population_position",
    "single_position",
    "mean_grad_sq",
)
"""Population fields (each with ``<name>_stderr``) that ``batches`` records average."""

WHOLE_ONLY = ("noise_scale", "noise_scale_stderr", "noise_scale_tokens", "sequences_needed")
"""Population fields that only a ``whole`` record has (None for ``batches``)."""


def aggregate(
    measurements: Sequence[Measurement],
    measuring: Measuring = Measuring.BATCHES,
    train_batch_sequences: int | None = None,
) -> Record:
    """The record fields of ``measurements`` (one for ``whole``; the batches in order for
    ``batches``): the decomposition and its errors (the module's rule), the population
    fields, ``train_batch_position`` at ``train_batch_sequences``, what it ran with."""
    if measuring is Measuring.WHOLE and len(measurements) != 1:
        raise ValueError(f"a whole-subset record has one measurement, found {len(measurements)}")
    first = measurements[0]
    out: Record = {}
    for name in ("loss", "grad_norm_sq", "chi_loss", "chi_net", "spectral_position", "normalized_position"):
        value, stderr = _mean_stderr(measurements, name)
        out[name] = value
        out[f"{name}_stderr"] = stderr  # type: ignore[literal-required]
    out["measurement"] = measuring.value
    out.update(_population(measurements, measuring))
    out.update(_train_batch(measurements, train_batch_sequences))
    out.update(
        {
            "num_batches": len(measurements),
            "num_outputs": first.num_outputs,
            "num_params_selected": first.num_params,
            "num_tokens": sum(m.num_tokens for m in measurements),
            "estimator": first.estimator,
            "probes": first.probes,
            "micro_batch_size": max(m.micro_batch_size for m in measurements),
            "dtype": first.dtype,
            "batches": [m.to_dict() for m in measurements],
        }
    )
    if first.groups is not None:
        out["groups"] = _aggregate_groups(measurements)
    return out


def _population(measurements: Sequence[Measurement], measuring: Measuring) -> Record:
    """The population fields: the measurement's own (``whole``), or means over the batches."""
    first = measurements[0]
    out: dict[str, Any] = {}
    if measuring is Measuring.WHOLE:
        for name in POPULATION_MEANS:
            out[name] = getattr(first, name)
            out[f"{name}_stderr"] = getattr(first, f"{name}_stderr")
        for name in WHOLE_ONLY:
            out[name] = getattr(first, name)
        out["population_status"] = first.population_status
        return out  # type: ignore[return-value]
    for name in POPULATION_MEANS:
        out[name], out[f"{name}_stderr"] = _optional_mean_stderr(measurements, name)
    out.update(dict.fromkeys(WHOLE_ONLY))
    out["population_status"] = _batches_status(measurements, out)
    return out  # type: ignore[return-value]


def _batches_status(measurements: Sequence[Measurement], means: dict[str, Any]) -> str | None:
    """``population_status`` of a ``batches`` record: ``nonpositive`` if a batch is, else
    the rule of one measurement applied to the mean and its standard error."""
    statuses = [m.population_status for m in measurements]
    if any(s is None for s in statuses):
        return None
    if PopulationStatus.NONPOSITIVE.value in statuses or means["population_position"] is None:
        return PopulationStatus.NONPOSITIVE.value
    position, stderr = means["population_position"], means["population_position_stderr"]
    if position <= 0:
        return PopulationStatus.NONPOSITIVE.value
    noisy = stderr is None or stderr > NOISY_ABOVE * position  # measure's rule
    return (PopulationStatus.NOISY if noisy else PopulationStatus.OK).value


def _train_batch(measurements: Sequence[Measurement], sequences: int | None) -> Record:
    """χ_pos predicted at the training batch of ``sequences`` (``position_at``): the mean
    over the batches (one for ``whole``). Its error: the spread rule with several batches;
    with one, the errors of χ_pos^∞ and χ_pos(1) added with their weights (1 − 1/n, 1/n)
    as if fully correlated — an upper bound, since the Measurement keeps no covariance."""
    out: Record = {"train_batch_sequences": sequences}
    values = [m.position_at(sequences) for m in measurements] if sequences else [None]
    if any(v is None for v in values) or sequences is None:
        out.update({"train_batch_position": None, "train_batch_position_stderr": None})
        return out
    numbers = np.array(values, dtype=float)
    if len(numbers) > 1:
        stderr: float | None = float(numbers.std(ddof=1) / np.sqrt(len(numbers)))
    else:
        first = measurements[0]
        se_inf, se_one = first.population_position_stderr, first.single_position_stderr
        weight = 1.0 / sequences
        stderr = None if se_inf is None or se_one is None else (1.0 - weight) * se_inf + weight * se_one
    out.update({"train_batch_position": float(numbers.mean()), "train_batch_position_stderr": stderr})
    return out


def _mean_stderr(measurements: Sequence[Any], name: str) -> tuple[float, float]:
    """The mean over the batches of value ``name`` and its standard error (see the module;
    with one batch, 0 for the values a measurement gives no error for). ``measurements`` are
    Measurements, or one group's GroupShares across the batches."""
    first = measurements[0]
    values = np.array([getattr(m, name) for m in measurements])
    if len(values) > 1:
        stderr = float(values.std(ddof=1) / np.sqrt(len(values)))
    elif name in ("chi_net", "spectral_position"):
        stderr = getattr(first, f"{name}_stderr")
    elif name == "normalized_position":
        stderr = first.num_outputs * first.spectral_position_stderr
    elif name == "loss" and getattr(first, "loss_stderr", None) is not None:
        stderr = first.loss_stderr  # over the sequences (a Measurement's jackknife)
    else:
        stderr = 0.0
    return float(values.mean()), stderr


def _optional_mean_stderr(measurements: Sequence[Any], name: str) -> tuple[float | None, float | None]:
    """:func:`_mean_stderr` of a value that may be None: None when a batch has none; with
    one batch, the measurement's own ``<name>_stderr``."""
    values = [getattr(m, name) for m in measurements]
    if any(v is None for v in values):
        return None, None
    if len(values) == 1:
        return float(values[0]), getattr(measurements[0], f"{name}_stderr")
    numbers = np.array(values, dtype=float)
    return float(numbers.mean()), float(numbers.std(ddof=1) / np.sqrt(len(numbers)))


def _aggregate_groups(measurements: Sequence[Measurement]) -> list[GroupRow]:
    """Per group, the mean over batches of each value (χ_net and χ_pos^∞ with a standard error)."""
    rows = []
    for i, share in enumerate(measurements[0].groups or ()):
        per_batch = [m.groups[i] for m in measurements if m.groups is not None]
        chi_net, chi_net_stderr = _mean_stderr(per_batch, "chi_net")
        population, population_stderr = _optional_mean_stderr(per_batch, "population_position")
        rows.append(
            GroupRow(
                name=share.name,
                num_params=share.num_params,
                chi_net=chi_net,
                grad_norm_sq=_mean(per_batch, "grad_norm_sq"),
                spectral_position=_mean(per_batch, "spectral_position"),
                chi_net_share=_mean(per_batch, "chi_net_share"),
                grad_norm_sq_share=_mean(per_batch, "grad_norm_sq_share"),
                chi_net_stderr=chi_net_stderr,
                population_position=population,
                population_position_stderr=population_stderr,
            )
        )
    return rows


def _mean(values: Sequence[Any], name: str) -> float:
    """The mean of attribute ``name`` over ``values``."""
    return float(np.mean([getattr(v, name) for v in values]))

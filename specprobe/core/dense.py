"""The dense reference: J, Θ = J Jᵀ and its eigendecomposition, built explicitly.

For tiny models only (D·P and D² numbers in memory). It exists to prove the matrix-free
code right: every identity of the decomposition can be checked on it exactly, and the
tests compare :func:`specprobe.measure` against it in float64. It shares the adapters and
parameter selection with the fast path, but none of its arithmetic: J comes from
``torch.func.jacrev`` over ``functional_call``, the residual from autograd on the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev

from specprobe.core.adapters import Adapter, AdapterKind, Loss, resolve_adapter
from specprobe.core.params import measuring, select_parameters
from specprobe.errors import TooLargeError


@dataclass(frozen=True)
class DenseKernel:
    """Explicit eNTK of one batch. Outputs are the counted raw outputs, flattened (D of them)."""

    jacobian: Tensor
    """J = ∂f/∂θ, shape (D, P), columns in the order of the selected parameters."""
    theta: Tensor
    """Θ = J Jᵀ, shape (D, D)."""
    residual: Tensor
    """g = ∂L/∂f, shape (D,), from autograd on the mean loss."""
    loss: float
    eigenvalues: Tensor
    """λ_1 ≥ … ≥ λ_D, shape (D,)."""
    eigenvectors: Tensor
    """v_k as columns, shape (D, D)."""

    @property
    def grad_norm_sq(self) -> float:
        """‖Jᵀg‖²."""
        return float((self.jacobian.T @ self.residual).square().sum())

    @property
    def chi_loss(self) -> float:
        """‖g‖²."""
        return float(self.residual.square().sum())

    @property
    def chi_net(self) -> float:
        """Tr Θ."""
        return float(torch.trace(self.theta))

    @property
    def spectral_position(self) -> float:
        """‖∇θL‖² / (χ_loss χ_net)."""
        return self.grad_norm_sq / (self.chi_loss * self.chi_net)

    @property
    def overlaps(self) -> Tensor:
        """q_k = (v_k·g)² / ‖g‖², summing to 1."""
        return (self.eigenvectors.T @ self.residual).square() / self.chi_loss


def dense_kernel(
    model: nn.Module,
    batch: Any,
    *,
    adapter: Adapter | AdapterKind | str | Callable[[nn.Module, Any], Any] | None = None,
    params: Sequence[str] | str | None = None,
    max_outputs: int = 4096,
) -> DenseKernel:
    """Build J, Θ and the eigendecomposition of Θ for ``model`` on ``batch``.

    Cost: D backward passes (jacrev) and an O(D³) eigendecomposition; memory D·P + D².
    Refuses D > ``max_outputs``.
    """
    resolved = resolve_adapter(adapter, batch)
    selected = select_parameters(model, params)
    names = [name for name, _ in selected]
    values = {name: p.detach() for name, p in selected}
    with measuring(model, selected):
        adapted = resolved(model, batch)
        mask = adapted.mask
        num_outputs = int(mask.sum()) * adapted.outputs.shape[-1]
        if num_outputs > max_outputs:
            raise TooLargeError(
                f"the dense reference holds a D×D kernel; D={num_outputs} exceeds max_outputs={max_outputs}",
                "use specprobe.measure for large batches",
            )

        def counted_outputs(p: dict[str, Tensor]) -> Tensor:
            bound = _Bound(model, p)
            return resolved(bound, batch).outputs[mask].reshape(-1)

        jac = jacrev(counted_outputs)(values)
        jacobian = torch.cat([jac[n].reshape(num_outputs, -1) for n in names], dim=1)
        f = adapted.outputs.detach()[mask].requires_grad_(True)
        loss = _mean_loss(f, adapted.targets[mask], adapted.loss)
        (residual,) = torch.autograd.grad(loss, f)
    theta = jacobian @ jacobian.T
    eigenvalues, eigenvectors = torch.linalg.eigh(theta)
    return DenseKernel(
        jacobian=jacobian,
        theta=theta,
        residual=residual.reshape(-1),
        loss=float(loss.detach()),
        eigenvalues=eigenvalues.flip(0),
        eigenvectors=eigenvectors.flip(1),
    )


def _mean_loss(f: Tensor, targets: Tensor, loss: Loss) -> Tensor:
    if loss is Loss.CROSS_ENTROPY:
        return torch.nn.functional.cross_entropy(f, targets, reduction="mean")
    return torch.nn.functional.mse_loss(f, targets.to(f.dtype), reduction="mean")


class _Bound(nn.Module):
    """Calls ``model`` with its parameters replaced by ``values`` (for torch.func)."""

    def __init__(self, model: nn.Module, values: dict[str, Tensor]) -> None:
        super().__init__()
        self.inner = [model]  # a list, so the model is not registered as a submodule
        self.values = values

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.inner[0], self.values, args, kwargs)

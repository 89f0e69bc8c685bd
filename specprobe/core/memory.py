"""How much memory a measurement needs, and how much there is, so sizes are chosen to fit.

On a GPU an out-of-memory error can be caught and the micro-batch halved; on a CPU the
kernel's out-of-memory killer ends the process without a word. So ``measure`` estimates
its need before the first full pass: one forward pass of a single sample counts the bytes
autograd saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``), and
the sizes of the outputs whose gradients the probes request; both grow linearly with the
samples of a micro-batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

CPU_SHARE = 0.7
"""Share of the memory the OS reports available that a measurement plans to use on a CPU."""
CUDA_SHARE = 0.85
"""Share of the free device memory (plus the allocator's free cache) planned on a GPU."""
MAX_PROBE_BATCH = 16
"""Most cotangents sent through one backward pass: beyond this the batching gains little."""
PROBE_SHARE = 0.35
"""The probes of one backward pass may take at most this share of what a training step
adds above the weights (its gradient and activations), so that a measurement's peak stays
within 1.5× a training step's (the rest of the margin is for the residual and transients).
At least one probe goes per pass, which on the smallest models is more than the share: a
probe's output gradients are as large as the activations of its layers, so the peak is
then up to 2× a training step's (1.9× at 1M parameters, ``benchmarks/bench_perspic.py``).
There is no floor that dwarfs the model: since the norm layers' ∂y/∂w is analytic (no
forward-mode product per probe block), one probe per pass costs a 1M-parameter model about
what a block of 16 does, so only :data:`SMALL_PROBE_BLOCK` is allowed beyond the share."""
SMALL_PROBE_BLOCK = 4 * 2**20
"""…a probe block of up to 4 MiB is allowed whatever the share: below about 1M parameters a
backward pass is so short that its fixed overhead dominates, and 4 MiB is small beside
the process itself (a 1M-parameter model's probe takes 27 MiB, so it gets the share)."""


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can use on ``device``, or None where it cannot be told. On a
    CPU the least of the host's ``MemAvailable``, the memory cgroup's headroom
    (:func:`cgroup_headroom`: a container's limit) and the address space left under
    ``ulimit -v`` (:func:`address_space_headroom`), times :data:`CPU_SHARE`."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(CUDA_SHARE * (free + cached))
    if device.type == "cpu":
        limits = [
            n for n in (_meminfo_available(), cgroup_headroom(), address_space_headroom()) if n is not None
        ]
        return int(CPU_SHARE * min(limits)) if limits else None
    return None


def _meminfo_available() -> int | None:
    """The host's ``MemAvailable`` in bytes (Linux), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def cgroup_headroom(root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes this process's memory cgroup (a container's limit) still allows: ``memory.max``
    less ``memory.current`` (cgroup v2), or ``memory.limit_in_bytes`` less
    ``memory.usage_in_bytes`` (v1); None without a limit."""
    for limit_name, used_name in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        try:
            with open(f"{root}/{limit_name}", encoding="ascii") as f:
                limit = f.read().strip()
            with open(f"{root}/{used_name}", encoding="ascii") as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # "max", or v1's "no limit" (about 2^63)
            return max(0, int(limit) - used)
    return None


def address_space_headroom() -> int | None:
    """Bytes of address space left under ``RLIMIT_AS`` (``ulimit -v``): the soft limit less
    this process's ``VmSize``; None without a limit (or off Linux)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY or soft < 0:
            return None
        with open("/proc/self/status", encoding="ascii") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (ImportError, OSError, ValueError, StopIteration):
        return None
    return max(0, soft - size)


@dataclass(frozen=True)
class SampleCost:
    """Bytes one sample adds to a measurement's peak, from a one-sample forward pass."""

    saved: int
    """Tensors autograd keeps for the backward pass (activations), parameters excluded."""
    outputs: int
    """The raw outputs f (logits): the residual, the probes and their gradients are as large."""
    hooked: int
    """Outputs of the modules whose gradients the probes request (one copy per probe)."""

    def need(self, samples: int, probe_batch: int) -> int:
        """Peak bytes above the weights for a micro-batch of ``samples`` and ``probe_batch``
        cotangents: the graph, f with its softmax and residual, and per probe its cotangent,
        the requested gradients and the backward pass's own transients (about as large)."""
        return samples * (self.saved + 3 * self.outputs) + probe_batch * self.per_probe(samples)

    def per_probe(self, samples: int) -> int:
        """One cotangent, the gradients it requests, and the backward pass's transients."""
        return samples * 2 * (self.hooked + self.outputs)

    def probe_cap(self, samples: int, param_bytes: int) -> int:
        """The most probes per backward pass within :data:`PROBE_SHARE` of a training step's
        own addition (the gradient, ``param_bytes``, and the activations) or in
        :data:`SMALL_PROBE_BLOCK`, whichever is larger; at least 1."""
        allowed = max(PROBE_SHARE * (param_bytes + samples * self.saved), SMALL_PROBE_BLOCK)
        return max(1, int(allowed // max(1, self.per_probe(samples))))


@dataclass(frozen=True)
class MemoryPlan:
    """``measure``'s memory plan, stated before its first full pass (``measure(plan=...)``):
    the estimated peak in bytes, part by part, beside a training step's estimate on the
    same micro-batch. On a CPU the peak is the process's resident memory (weights
    included); on a GPU the allocator's."""

    weights: int
    """The selected parameters, in the model's dtype."""
    process: int
    """What the process already holds besides them when the plan is made: on a CPU its
    resident memory less the weights (the libraries, the interpreter, the batch, parameters
    not selected), on a GPU the allocator's other tensors."""
    gradient_sum: int
    """V = Σ_s v_s, P floats in :attr:`gradient_sum_dtype`, kept across micro-batches or
    processes (the gradient and the population's second pass need it); 0 with one
    micro-batch in one process, where each tensor's gradient is reduced as it arrives."""
    gradient_sum_dtype: str
    """The accumulation dtype of V: float32 for float32 and lower-precision models (each
    micro-batch's gradient, computed in the model's dtype, is added with float32's rounding,
    2⁻²⁴ relative per addition), float64 for float64 models."""
    graph: int
    """One micro-batch's autograd graph (activations) and its outputs, softmax and residual."""
    probes: int
    """The cotangents of one backward pass and the layer-output gradients they request."""
    transients: int
    """Room for two copies of the largest parameter tensor (a gradient being added, a cast)."""
    micro_batch_size: int
    probe_batch_size: int
    available: int | None
    """What the plan may use (``available_bytes``), None where it cannot be told."""
    training_step: int
    """A training step's estimate on the same micro-batch: the process, the weights, a
    gradient in the model's dtype (``.grad``) and the graph."""
    gradient_sum_on_host: bool = False
    """Whether V is kept in the host's memory while the model is on a GPU
    (``measure(gradient_sum_device=...)``): it is then not part of :attr:`total` (the
    device's peak) but of :attr:`host`."""
    host_available: int | None = None
    """With V on the host: what the host may give it (``available_bytes`` of the CPU)."""

    @property
    def total(self) -> int:
        """The estimated peak on the model's device: the weights and every part above them
        (V included, unless it is on the host)."""
        return (
            self.weights
            + self.process
            + self.device_gradient_sum
            + self.graph
            + self.probes
            + self.transients
        )

    @property
    def host(self) -> int:
        """What the plan adds to the host's memory: V where it is kept there, else 0."""
        return self.gradient_sum if self.gradient_sum_on_host else 0

    @property
    def device_gradient_sum(self) -> int:
        """V's bytes on the model's device: all of it, unless it is kept on the host."""
        return self.gradient_sum - self.host

    def refused(self, cpu: bool) -> bool:
        """Whether ``measure`` refuses this plan before work: on a CPU when the estimate above
        the weights exceeds :attr:`available` (the OOM killer would end the process without
        a word); on any device when V alone does (P floats: exact, not an estimate, and no
        smaller micro-batch or probe block can shrink it; a GPU's out-of-memory retry would
        only meet it later). Never where :attr:`available` is unknown."""
        if self.gradient_sum_on_host and self.host_available is not None and self.host > self.host_available:
            return True
        if self.available is None:
            return False
        above = self.total - self.weights - self.process
        return (cpu and above > self.available) or self.device_gradient_sum > self.available

    def as_dict(self) -> dict[str, int | str | bool | None]:
        """The plan as plain values, ``total`` included (for JSON and messages)."""
        return {
            "weights": self.weights,
            "process": self.process,
            "gradient_sum": self.gradient_sum,
            "gradient_sum_dtype": self.gradient_sum_dtype,
            "graph": self.graph,
            "probes": self.probes,
            "transients": self.transients,
            "micro_batch_size": self.micro_batch_size,
            "probe_batch_size": self.probe_batch_size,
            "available": self.available,
            "training_step": self.training_step,
            "gradient_sum_on_host": self.gradient_sum_on_host,
            "host_available": self.host_available,
            "total": self.total,
            "host": self.host,
        }

    def summary(self) -> str:
        """A short line: the estimate beside a training step's, and where V is kept."""
        kept = ""
        if self.gradient_sum:
            where = "in the host's memory" if self.gradient_sum_on_host else "beside the model"
            kept = (
                f", the gradient sum V ({human_bytes(self.gradient_sum)}, {self.gradient_sum_dtype}) {where}"
            )
        return (
            f"about {human_bytes(self.total)} (a training step: about {human_bytes(self.training_step)}){kept}; "
            f"micro-batches of {self.micro_batch_size}, {self.probe_batch_size} probe(s) per backward pass"
        )

    def describe(self) -> str:
        """One line: the estimate part by part, beside a training step's."""
        parts = [f"weights {human_bytes(self.weights)}", f"the process {human_bytes(self.process)}"]
        if self.gradient_sum and not self.gradient_sum_on_host:
            parts.append(f"gradient sum V {human_bytes(self.gradient_sum)} ({self.gradient_sum_dtype})")
        parts += [
            f"activations {human_bytes(self.graph)} (micro-batch {self.micro_batch_size})",
            f"probes {human_bytes(self.probes)} ({self.probe_batch_size} per backward pass)",
            f"transients {human_bytes(self.transients)}",
        ]
        host = (
            f"; on the host, the gradient sum V {human_bytes(self.gradient_sum)} ({self.gradient_sum_dtype})"
            if self.gradient_sum_on_host
            else ""
        )
        return (
            f"about {human_bytes(self.total)}: " + ", ".join(parts) + f"; a training step about "
            f"{human_bytes(self.training_step)}{host}"
        )


def gradient_sum_on_host(
    device: torch.device,
    requested: str | None,
    fits_on_device: bool,
    gradient_sum: int,
    host_room: int | None,
) -> bool:
    """Where V goes (True: the host's memory) for a model on ``device``: where
    ``requested`` says (``"device"`` or ``"cpu"``); by default (None) on the device when the
    plan fits there with it, else on the host when the model is on a GPU and the host has
    room for it (``host_room`` bytes; unknown counts as room). A model on the CPU keeps V
    beside it."""
    if device.type == "cpu" or requested == "device":
        return False
    if requested == "cpu":
        return True
    return not fits_on_device and (host_room is None or gradient_sum <= host_room)


def sample_cost(
    forward: Callable[[], Any], params: Sequence[Tensor], hooked: Callable[[], int]
) -> SampleCost:
    """Run ``forward`` (one sample) and count what it would keep for a backward pass.

    ``hooked`` returns the bytes of the hooked module outputs of that forward pass.
    """
    storages = {p.untyped_storage().data_ptr() for p in params}
    seen: set[int] = set()
    saved = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal saved
        try:
            ptr = t.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):
            return t
        if ptr not in storages and ptr not in seen:
            seen.add(ptr)
            saved += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        adapted = forward()
    outputs = adapted.outputs
    return SampleCost(saved=saved, outputs=outputs.numel() * outputs.element_size(), hooked=hooked())


def held_bytes(device: torch.device) -> int | None:
    """What this process holds now: its resident memory on a CPU, the allocator's tensors on
    a GPU; None where it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            with open("/proc/self/statm", encoding="ascii") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (Linux ``VmHWM``); False where unsupported.

    For benchmarks and tests: with ``MALLOC_MMAP_THRESHOLD_`` set in the environment (a
    fixed threshold, so glibc returns large freed blocks to the OS), the peak after a reset
    is the peak of what runs next, with no sampling thread that could miss it.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss() -> int | None:
    """This process's peak resident memory in bytes since start or :func:`reset_peak_rss`."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def human_bytes(n: float) -> str:
    """Bytes for messages: GiB with one decimal, or MiB below one GiB."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"

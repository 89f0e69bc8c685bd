"""Which parameters θ the kernel is taken over, and a context that restores the model.

Parameters are selected by glob patterns on their names (``fnmatch``), matched against
every name a parameter has: a tied embedding is one tensor reachable as both
``transformer.wte.weight`` and ``lm_head.weight``, and either name selects it. The
Jacobian then sums both uses of the tensor, as autograd does for any shared leaf.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from difflib import get_close_matches
from fnmatch import fnmatchcase

import torch
from torch import nn

from specprobe.errors import ParameterSelectionError


def select_parameters(
    model: nn.Module, patterns: Sequence[str] | str | None = None
) -> list[tuple[str, nn.Parameter]]:
    """The parameters to measure over, as ``(name, parameter)`` pairs, each tensor once.

    ``patterns=None`` selects every parameter with ``requires_grad=True`` (the trainable
    ones). Otherwise a parameter is selected when any of its names matches any pattern,
    whatever its ``requires_grad``; e.g. ``["embed_out.*", "lm_head.*"]`` selects the
    output head of GPT-NeoX or GPT-2. Raises ParameterSelectionError when nothing is
    selected or a pattern matches nothing.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    named = list(model.named_parameters(remove_duplicate=False))
    if not named:
        raise ParameterSelectionError(
            f"expected a model with parameters, found none in {type(model).__name__}",
            "measure a model that has trainable parameters",
        )
    selected: dict[int, tuple[str, nn.Parameter]] = {}
    if patterns is None:
        for name, param in named:
            if param.requires_grad:
                selected.setdefault(id(param), (name, param))
        if not selected:
            raise ParameterSelectionError(
                "expected trainable parameters (requires_grad=True), found none",
                "unfreeze some parameters or select them by name with params=[...]",
            )
        return list(selected.values())
    for pattern in patterns:
        hits = [(n, p) for n, p in named if fnmatchcase(n, pattern)]
        if not hits:
            names = [n for n, _ in named]
            close = get_close_matches(pattern.rstrip("*").rstrip("."), names, n=3, cutoff=0.6)
            shown = close or [*names[:2], "...", *names[-2:]]
            lead = "did you mean" if close else "names look like"
            raise ParameterSelectionError(
                f"parameter pattern {pattern!r} matches no parameter name ({lead}: {', '.join(shown)})",
                "patterns are globs on full names, e.g. 'lm_head.*' or '*.layers.0.*'",
            )
        for name, param in hits:
            selected.setdefault(id(param), (name, param))
    # Keep the model's own order, so results do not depend on the order of the patterns.
    order = {id(p): i for i, (_, p) in enumerate(named)}
    return sorted(selected.values(), key=lambda item: order[id(item[1])])


@contextmanager
def measuring(model: nn.Module, selected: Sequence[tuple[str, nn.Parameter]]) -> Iterator[None]:
    """Put ``model`` in measuring state and restore the caller's state afterwards.

    While inside: every module in eval mode (dropout off, BatchNorm on running statistics),
    ``requires_grad`` on for the selected parameters and off for all others (so backward
    passes skip them), and autograd enabled even inside a caller's ``torch.no_grad()``.
    On exit, also after an exception: each module's training flag and each parameter's
    ``requires_grad`` as they were. An ``nn.Embedding(scale_grad_by_freq=True)`` is measured
    as the plain embedding its forward is (the flag is off inside, restored on exit).
    ``.grad`` buffers are never touched: gradients are taken
    with ``torch.autograd.grad``, which does not accumulate into them.
    """
    training = [(m, m.training) for m in model.modules()]
    requires = [(p, p.requires_grad) for p in model.parameters()]
    # An Embedding with scale_grad_by_freq computes the same function; only its backward
    # divides by the batch's token counts, which is no derivative (and would make χ_net
    # depend on the micro-batch): measured as the plain embedding it is, flag restored.
    scaled = [m for m in model.modules() if isinstance(m, nn.Embedding) and m.scale_grad_by_freq]
    chosen = {id(p) for _, p in selected}
    try:
        for embedding in scaled:
            embedding.scale_grad_by_freq = False
        model.eval()
        for param, _ in requires:
            param.requires_grad_(id(param) in chosen)
        with torch.enable_grad():
            yield
    finally:
        for embedding in scaled:
            embedding.scale_grad_by_freq = True
        for module, flag in training:
            module.training = flag
        for param, flag in requires:
            param.requires_grad_(flag)


AUTO_GROUPS = "auto"
_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
_HEAD = re.compile(r"(?:^|\.)(?:lm_head|embed_out|head|classifier|score)\.")
_EMBED = re.compile(r"embed|(?:^|\.)(?:wte|wpe|word_embeddings|position_embeddings)\.")
_NORM = re.compile(r"norm|(?:^|\.)ln_f\.")


def auto_group(name: str) -> str:
    """The automatic group of a parameter name: ``embeddings``, ``block N``, ``final norm``,
    ``head`` or ``other`` (covers GPT-NeoX, GPT-2, Llama and most HF decoder layouts)."""
    block = _BLOCK.search(name)
    if block:
        return f"block {int(block.group(1))}"
    if _HEAD.search(name):
        return "head"
    if _EMBED.search(name):
        return "embeddings"
    if _NORM.search(name):
        return "final norm"
    return "other"


def group_parameters(names: Sequence[str], spec: str | Mapping[str, Sequence[str]]) -> list[str]:
    """The group of each parameter name: ``spec="auto"`` uses :func:`auto_group`; a mapping
    ``{group: [globs]}`` takes the first group with a matching glob, ``other`` when none does.
    """
    if isinstance(spec, str):
        if spec != AUTO_GROUPS:
            raise ParameterSelectionError(
                f"expected groups='auto' or a mapping of group name to globs, found {spec!r}",
                "e.g. groups={'attention': ['*.attention.*'], 'mlp': ['*.mlp.*']}",
            )
        return [auto_group(n) for n in names]
    groups = []
    for name in names:
        for group, patterns in spec.items():
            if any(fnmatchcase(name, p) for p in ([patterns] if isinstance(patterns, str) else patterns)):
                groups.append(group)
                break
        else:
            groups.append("other")
    return groups

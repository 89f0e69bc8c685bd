"""specprobe on a custom CNN: synthetic images, spectral position during a short training.

Images of 12×12 pixels hold a bright bar that is horizontal or vertical (the class), in
noise. A small CNN is trained with SGD; the decomposition is measured with a Probe at
log-spaced steps on a fixed batch. Plain PyTorch, no Hugging Face.

    python examples/custom_cnn.py [--steps 60]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import nn

import specprobe


def bars(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n noisy 1×12×12 images with a horizontal (class 0) or vertical (class 1) bar."""
    images = 0.5 * torch.randn(n, 1, 12, 12, generator=generator)
    labels = torch.randint(0, 2, (n,), generator=generator)
    where = torch.randint(2, 10, (n,), generator=generator)
    for i in range(n):
        if labels[i] == 0:
            images[i, 0, where[i], :] += 2.0
        else:
            images[i, 0, :, where[i]] += 2.0
    return images, labels


def main(argv: Sequence[str] | None = None) -> list[tuple[int | None, specprobe.Measurement]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--probes", type=int, default=16)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    probe = specprobe.Probe(bars(32, g), probes=args.probes, schedule=specprobe.log_steps(args.steps, 5))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(args.steps + 1):
        probe.maybe_measure(step, model)
        x, y = bars(32, g)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"{'step':>5} {'loss':>8} {'χ_net':>12} {'χ_pos':>12} {'D·χ_pos':>8}")
    for step, m in probe.measurements:
        print(
            f"{step:>5} {m.loss:8.4f} {m.chi_net:12.4g} {m.spectral_position:12.4g} {m.normalized_position:8.3f}"
        )
    return probe.measurements


if __name__ == "__main__":
    main()

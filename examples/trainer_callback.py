"""Measuring during a Hugging Face Trainer run with SpecprobeCallback.

A tiny GPT-NeoX is trained by ``transformers.Trainer`` on a small synthetic dataset; the
callback measures it on a fixed probe batch at log-spaced steps, hands the decomposition
to the Trainer's loggers (``specprobe/chi_net``, ``specprobe/spectral_position``, …: it
reaches TensorBoard or W&B when the Trainer reports to them; the Trainer's own
``log_history`` stays as without the callback) and writes records to a run directory for
``specprobe report``.

    python examples/trainer_callback.py [--steps 40] [--out specprobe-runs/trainer]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from typing import Any

import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

import specprobe
from specprobe import SpecprobeCallback
from specprobe.models.tiny import tiny_causal_lm


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default="specprobe-runs/trainer")
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    motif = torch.randint(0, 40, (128, 8), generator=g)
    ids = motif.repeat(1, 4)  # each sequence repeats its motif: learnable in-context copying
    train = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    model = tiny_causal_lm("gpt_neox", vocab_size=40, hidden_size=32, num_layers=2)
    with tempfile.TemporaryDirectory() as tmp:
        training = TrainingArguments(
            output_dir=tmp,
            max_steps=args.steps,
            per_device_train_batch_size=16,
            learning_rate=3e-3,
            logging_steps=10,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=training, train_dataset=train)
        probe = specprobe.Probe(
            {"input_ids": ids[:8]},
            probes=16,
            schedule=specprobe.log_steps(args.steps, 6),
            out=args.out,
            label="trainer-neox",
        )
        SpecprobeCallback.attach(trainer, probe)
        trainer.train()
    logged = [{"step": step, **probe.log_dict(m)} for step, m in probe.measurements]
    for entry in logged:
        print(
            f"step {entry['step']:>4}: χ_pos {entry['specprobe/spectral_position']:.4g}, "
            f"χ_net {entry['specprobe/chi_net']:.4g}"
        )
    print(f"records in {args.out}: specprobe report {args.out}")
    return logged


if __name__ == "__main__":
    main()

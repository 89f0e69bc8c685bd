"""The named configurations of ``specprobe demo --preset NAME``: :data:`PRESETS`,
:func:`preset`, and what each costs as measured (:attr:`Preset.budget`, the one place the
command line's help takes its durations from).

Light like :mod:`specprobe.demo.config`: the command line reads this for its ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from specprobe.demo.config import DemoConfig
from specprobe.errors import SpecprobeError

DEFAULT_PRESET = "tiny-neox"
FAST_PRESET = "tiny-neox-fast"
"""The preset ``specprobe demo --fast`` selects."""


@dataclass(frozen=True)
class Preset:
    """A named configuration of ``specprobe demo``, with a reduced size for its test."""

    name: str
    description: str
    config: DemoConfig
    reduced: DemoConfig
    """The same recipe shrunk to seconds (the test trains and measures it)."""
    budget: str
    """The stated cost, as measured (or, for a GPU preset not yet run, as sized); ``specprobe
    demo --help`` shows those of the default and ``--fast``."""
    measured: str = ""
    """The measurements behind ``budget``, where it rounds them (durations, threads, machine)."""


def _llama_cpu() -> DemoConfig:
    return DemoConfig(
        arch="llama",
        corpus="longtail",
        vocab_size=512,
        train_documents=16000,
        eval_documents=400,
        widths=(8, 16, 32, 64, 128),
        num_layers=2,
        lr_rule="mup",
        learning_rate=4e-3,
        base_width=32,
        seq_len=64,
        batch_size=16,
        steps=1536,
        warmup_steps=32,
        checkpoints=8,
        first_checkpoint=12,
        eval_sequences=256,
        eval_seq_len=64,
        probes=4,
    )


def _llama_cpu_long() -> DemoConfig:
    """The reach study's ``longest`` configuration, where the reach exponent came closest to
    the paper's claim (seed 0: N^−0.21 ± 0.02; seeds 1 and 2 do not repeat it; see
    docs/reach-study.md): ``llama-cpu`` trained 4,096 steps on fresh data, widths 8–64."""
    return replace(
        _llama_cpu(),
        vocab_size=384,
        train_documents=48000,
        eval_documents=300,
        widths=(8, 16, 32, 64),
        steps=4096,
        checkpoints=9,
        first_checkpoint=16,
        # measured as the study's first round measured it (its numbers, quoted with the preset)
        eval_sequences=32,
        eval_batch_size=8,
        probes=16,
    )


def _llama_gpu() -> DemoConfig:
    return DemoConfig(
        arch="llama",
        corpus="longtail",
        vocab_size=1024,
        train_documents=200000,
        eval_documents=1000,
        widths=(32, 64, 128, 256, 512),
        num_layers=4,
        head_dim=32,
        lr_rule="mup",
        learning_rate=4e-3,
        base_width=64,
        seq_len=128,
        batch_size=64,
        steps=3072,
        warmup_steps=64,
        checkpoints=8,
        first_checkpoint=16,
        eval_sequences=512,
        eval_seq_len=128,
        probes=4,
        device="cuda",
    )


def _reduced(config: DemoConfig) -> DemoConfig:
    """A preset shrunk to seconds: its corpus, architecture and rules; two tiny sizes."""
    return replace(
        config,
        train_documents=300,
        eval_documents=30,
        vocab_size=320,
        widths=(8, 16),
        depths=None,
        num_layers=1,
        head_dim=8,
        base_width=8,
        seq_len=16,
        batch_size=4,
        steps=6,
        warmup_steps=2,
        checkpoints=2,
        first_checkpoint=2,
        eval_sequences=4,
        eval_seq_len=16,
        eval_batch_size=None if config.eval_batch_size is None else 2,
        probes=2,
        device="cpu",
    )


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            DEFAULT_PRESET,
            "the original demo: four GPT-NeoX models (widths 16 to 128, 19k to 495k parameters) "
            "on the simple synthetic language, one learning rate for all",
            DemoConfig(),
            _reduced(DemoConfig()),
            "5 to 10 minutes on 2 CPU cores",
            "564 s with one thread on 2 CPU cores that four other jobs shared (load average about 4; "
            "2026-12-07, from a fresh clone, after a 219 s install); 280 s on 2 cores that fewer jobs "
            "shared (2026-12-05: training about 2 minutes; measuring 256 held-out sequences as one "
            "set per checkpoint, 11.5 s for the widest model's on one thread); before the "
            "population position (32 sequences in 4 batches, 16 probes) 110 s",
        ),
        Preset(
            FAST_PRESET,
            "a smaller variant of tiny-neox for a first look (what --fast selects)",
            DemoConfig.fast(),
            _reduced(DemoConfig.fast()),
            "under a minute on 2 CPU cores",
            "9 s in all on quiet cores",
        ),
        Preset(
            "llama-cpu",
            "five Llama models (RMSNorm, rotary, SwiGLU; widths 8 to 128, 2 layers) on the "
            "long-tail language, μP-style learning rates (hidden matrices at 4e-3·32/width)",
            _llama_cpu(),
            _reduced(_llama_cpu()),
            "well within 15 minutes on 2 idle cores",
            "when it measured 32 sequences, 219 s of CPU time with one thread (train and measure; "
            "256 sequences as one set add about 4-5 minutes); 19.5 minutes of wall time on a "
            "shared machine that gave it a fifth of a core",
        ),
        Preset(
            "llama-cpu-long",
            "four Llama models (widths 8 to 64, 7.8k to 156k parameters) on the long-tail "
            "language for 4,096 steps of fresh data: the reach study's longest configuration, "
            "where the reach exponent came closest to the paper's claim (for seed 0 only)",
            _llama_cpu_long(),
            _reduced(_llama_cpu_long()),
            "723 s of wall time with one thread on a shared machine (train 695 s, measure 28 s)",
        ),
        Preset(
            "llama-gpu",
            "five Llama models (widths 32 to 512, 4 layers) on the long-tail language, "
            "μP-style learning rates, trained and measured on one GPU (--device cuda)",
            _llama_gpu(),
            _reduced(_llama_gpu()),
            "sized for 10 minutes on one H200; not yet run on a GPU",
        ),
    )
}
"""The presets of ``specprobe demo --preset NAME``."""


def preset(name: str) -> Preset:
    """The preset called ``name``; SpecprobeError naming the presets otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise SpecprobeError(
            f"expected a demo preset name, found {name!r}",
            f"choose one of {', '.join(PRESETS)}",
        ) from None

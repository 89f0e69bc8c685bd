"""What the demo is and where it writes: :class:`DemoConfig` (corpus, models, training,
measurement) and :class:`DemoLayout` (the files under one output directory).

Light on purpose: nothing here imports torch (numpy only when checkpoint steps are
computed), so the command line can read the presets for its ``--help`` without loading it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from specprobe.errors import SpecprobeError

TRAIN_FILE = "train.txt"
EVAL_FILE = "eval.txt"
DEMO_MARKER = ".specprobe-demo"
"""Written first into every output folder the demo makes: the demo writes only where it is."""
DEMO_NAMES = frozenset({DEMO_MARKER, "demo.json", "data", "tokenizer", "family", "run"})
"""What the demo writes at the top of its folder (``run`` is the run folder of the measurement)."""


@dataclass(frozen=True)
class DemoConfig:
    """Everything that decides the demo's corpus, models, training and measurement.

    Defaults: four widths (18,880 to 495,104 parameters with the 384-token vocabulary),
    1,024 steps of 16 × 64 tokens (1,048,576 tokens, about 1.2 passes over the 12,000
    training documents), 8 checkpoints per model at steps 8, 16, …, 1024, each measured on
    256 held-out sequences of 64 tokens as one set (D = 256 × 63 × 384 = 6,193,152 outputs)
    with 4 per-sample Hutchinson probes per sequence: the population position χ_pos^∞ to
    about ±14 % (widest model) and ±28 % (narrowest) at step 1024, where the gradient noise
    scale is 190–330 sequences; 11.5 s for the widest model's checkpoint on one thread. :meth:`fast` is a small variant for tests and a first
    look. What each costs, as measured, is the ``budget`` and ``measured`` of its preset
    (``tiny-neox`` and ``tiny-neox-fast`` in :data:`specprobe.demo.presets.PRESETS`).
    """

    seed: int = 0
    """Seeds the corpus, the tokenizer's data, the initialisation and the data order."""
    train_documents: int = 12000
    eval_documents: int = 400
    """Held-out documents the checkpoints are measured on."""
    vocab_size: int = 384
    """BPE vocabulary (256 bytes + merges + the end-of-text token)."""
    widths: tuple[int, ...] = (16, 32, 64, 128)
    """Hidden sizes of the family, one model each (4·width MLP, heads of 16 dimensions; one
    head below width 32)."""
    num_layers: int = 2
    seq_len: int = 64
    """Tokens per training sequence (documents joined by end-of-text, cut into windows)."""
    batch_size: int = 16
    """Sequences per step: tokens per step = batch_size × seq_len."""
    steps: int = 1024
    learning_rate: float = 3e-3
    """AdamW peak learning rate, after linear warm-up, cosine decay to a tenth."""
    warmup_steps: int = 16
    final_lr_fraction: float = 0.1
    """The learning rate at the last step as a fraction of the peak (cosine decay to it;
    1.0: constant after warm-up)."""
    weight_decay: float = 0.01
    checkpoints: int = 8
    """Checkpoints per model, log-spaced from ``first_checkpoint`` to ``steps``."""
    first_checkpoint: int = 8
    # Measurement (the analysis half): D = eval_sequences × (eval_seq_len − 1) × vocab.
    eval_sequences: int = 256
    eval_seq_len: int = 64
    eval_batch_size: int | None = None
    """None: the held-out sequences measured as one set (the population position); N: the
    mean over batches of N sequences (the measurement before the population position)."""
    probes: int = 4
    """Per-sample Hutchinson probes per sequence (the error of χ_pos^∞ comes from the spread
    over sequences: 16 probes give the same ±14 % at 2.4× the time)."""
    # The presets (see PRESETS) change the following; their defaults are the original demo.
    arch: str = "gpt_neox"
    """``gpt_neox`` (LayerNorm, rotary, GELU MLP of 4·width) or ``llama`` (LlamaForCausalLM:
    RMSNorm, rotary, SwiGLU MLP of 3·width, untied head, no bias; eager attention)."""
    depths: tuple[int, ...] | None = None
    """Layers of each model (one per width); None: ``num_layers`` for all."""
    head_dim: int = 16
    """Dimensions per attention head (one head below 2·head_dim)."""
    lr_rule: str = "constant"
    """``constant``: every model trains at ``learning_rate``. ``mup``: μP-style for Adam, the
    hidden matrices (every ≥ 2-D weight but the input embedding, the output head included)
    at ``learning_rate · base_width / width``; embeddings, norms and biases at
    ``learning_rate``; the initialisation is Hugging Face's (the first round of the reach
    study). ``mup-full``: μP as the ``mup`` package does it for Adam — the learning rates of
    ``mup``, those weights' decay × width / base_width, hidden matrices initialised with
    std ∝ 1/√width and the output head with std ∝ 1/width (mup's 1/width output
    multiplier folded into the weight), equal to Hugging Face's at ``base_width``; see
    :func:`specprobe.demo.training.mup_initialise`."""
    base_width: int = 32
    """The width at which ``lr_rule="mup"`` uses ``learning_rate`` unchanged."""
    corpus: str = "simple"
    """``simple``: the original language. ``longtail``: the long-tail language (a lexicon of
    1,500 nouns with a heavier Zipf tail, rare constructions, more long-range recall)."""
    measure_on: str = "eval"
    """``eval``: measure on held-out documents; ``train``: on the training documents."""
    device: str = "cpu"
    """Where the models train and are measured (``cpu`` or ``cuda``)."""

    @classmethod
    def fast(cls) -> DemoConfig:
        """A small variant: narrower models, fewer steps and a smaller measurement."""
        return cls(
            train_documents=1500,
            eval_documents=120,
            vocab_size=320,
            widths=(16, 32, 64),  # a subset of the tiny-local recipe's models
            seq_len=32,
            batch_size=8,
            steps=64,
            warmup_steps=4,
            checkpoints=4,
            first_checkpoint=4,
            eval_sequences=32,
            eval_seq_len=32,
            probes=4,
        )

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def checkpoint_steps(self) -> tuple[int, ...]:
        """The steps saved: ``checkpoints`` log-spaced integers from ``first_checkpoint`` to ``steps``."""
        if self.checkpoints < 2 or not 1 <= self.first_checkpoint < self.steps:
            raise SpecprobeError(
                f"expected checkpoints >= 2 and 1 <= first_checkpoint < steps, found checkpoints="
                f"{self.checkpoints}, first_checkpoint={self.first_checkpoint}, steps={self.steps}",
                "use at least 2 checkpoints between a first step and the last",
            )
        import numpy as np  # here, not at the top: see the module's docstring

        points = np.geomspace(self.first_checkpoint, self.steps, self.checkpoints)
        return tuple(sorted({round(float(p)) for p in points}))

    def layers(self) -> tuple[int, ...]:
        """Layers of each model, in the order of ``widths``."""
        return self.depths if self.depths is not None else (self.num_layers,) * len(self.widths)

    def model_names(self) -> tuple[str, ...]:
        prefix = "neox" if self.arch == "gpt_neox" else self.arch
        if self.depths is None:
            return tuple(f"{prefix}-w{w}" for w in self.widths)
        return tuple(f"{prefix}-w{w}-d{d}" for w, d in zip(self.widths, self.layers(), strict=True))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["widths"] = list(self.widths)
        out["depths"] = list(self.depths) if self.depths is not None else None
        return out

    def validate(self) -> None:
        """Raise SpecprobeError on settings that cannot train or measure."""
        self.checkpoint_steps()
        for name, allowed in (
            ("arch", ("gpt_neox", "llama")),
            ("lr_rule", ("constant", "mup", "mup-full")),
            ("corpus", ("simple", "longtail")),
            ("measure_on", ("eval", "train")),
            ("device", ("cpu", "cuda")),
        ):
            if getattr(self, name) not in allowed:
                raise SpecprobeError(
                    f"expected {name} to be one of {', '.join(allowed)}, found {getattr(self, name)!r}",
                    f"use {name}={allowed[0]!r}",
                )
        if self.depths is not None and (
            len(self.depths) != len(self.widths) or any(d < 1 for d in self.depths)
        ):
            raise SpecprobeError(
                f"expected one depth (>= 1) per width, found depths={self.depths} for widths={self.widths}",
                "give as many depths as widths, or none",
            )
        if len(self.widths) < 1 or any(w < 4 or w % 4 for w in self.widths):
            raise SpecprobeError(
                f"expected widths that are multiples of 4 (at least 4), found {self.widths}",
                "use e.g. widths=(16, 32, 64)",
            )
        if self.vocab_size < 300:
            raise SpecprobeError(
                f"expected vocab_size >= 300 (256 bytes, the end-of-text token and some merges), "
                f"found {self.vocab_size}",
                "use vocab_size=384",
            )
        for name in ("train_documents", "eval_documents", "seq_len", "batch_size", "probes"):
            if getattr(self, name) < 2:
                raise SpecprobeError(f"expected {name} >= 2, found {getattr(self, name)}", f"raise {name}")
        if self.eval_batch_size is not None and self.eval_sequences % self.eval_batch_size:
            raise SpecprobeError(
                f"expected eval_sequences to be a multiple of eval_batch_size, found "
                f"{self.eval_sequences} and {self.eval_batch_size}",
                "make eval_sequences a multiple of eval_batch_size",
            )


@dataclass(frozen=True)
class DemoLayout:
    """Where the demo writes, under one output directory."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def train_corpus(self) -> Path:
        return self.data / TRAIN_FILE

    @property
    def eval_corpus(self) -> Path:
        return self.data / EVAL_FILE

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def family(self) -> Path:
        return self.root / "family"

    @property
    def config(self) -> Path:
        """``demo.json``: the DemoConfig the family was trained with."""
        return self.root / "demo.json"

    @property
    def marker(self) -> Path:
        """``.specprobe-demo``: the folder is the demo's (:data:`DEMO_MARKER`)."""
        return self.root / DEMO_MARKER

    def model_dir(self, name: str) -> Path:
        return self.family / name

    def check_own(self) -> None:
        """SpecprobeError unless the demo may write here: the folder is new, empty, holds the
        marker, or holds only what an earlier demo wrote with its ``demo.json``. Writes nothing."""
        root = self.root
        try:
            if root.exists() and not root.is_dir():
                raise SpecprobeError(
                    f"expected a folder for the demo's output, found a file: {root}",
                    "give --out a new or empty folder",
                )
            if not root.exists() or self.marker.is_file():
                return
            names = sorted(entry.name for entry in root.iterdir())
        except OSError as err:
            raise SpecprobeError(
                f"cannot read {root}: {err.strerror}", "check the path and its permissions"
            ) from None
        foreign = [name for name in names if name not in DEMO_NAMES]
        if names and not foreign and not self.config.is_file():
            foreign = names  # the demo's names, but not a folder the demo wrote (no demo.json)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise SpecprobeError(
                f"{root} is not a folder the demo made: it holds {shown}",
                "give --out a new or empty folder; the demo writes only into folders it made",
            )

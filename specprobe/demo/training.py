"""The demo's training: a byte-level BPE tokenizer and a family of tiny models on one stream.

A byte-level BPE tokenizer is trained on the training documents (``tokenizers``, wrapped in
``PreTrainedTokenizerFast`` so that ``AutoTokenizer`` loads it back). :func:`train_family`
trains models of increasing width (GPT-NeoX by default; Llama, and depth instead of width,
in the presets; :func:`build_model`) on the same token stream and saves Hugging Face
checkpoints at log-spaced steps::

    <out>/demo.json                                   the DemoConfig
    <out>/data/train.txt, <out>/data/eval.txt        the corpus (eval: held-out documents)
    <out>/tokenizer/                                  the tokenizer
    <out>/family/<name>/checkpoint-<step>/            model.save_pretrained
    <out>/family/<name>/specprobe.json                {"tokens_per_step": ..., "train_batch_sequences": ...}
    <out>/family/<name>/tokenizer files               so each checkpoint loads with it
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from specprobe.demo.config import DemoConfig, DemoLayout
from specprobe.demo.language import LONGTAIL_LEXICON, generate_corpus, make_lexicon, token_stream
from specprobe.errors import SpecprobeError
from specprobe.models.tiny import train_tokenizer
from specprobe.store.folder import atomic_write


@dataclass(frozen=True)
class TrainingProgress:
    """What ``train_family`` reports to its progress callback after each step."""

    model: str
    """The model's name (its folder under ``<out>/family``)."""
    model_index: int
    num_models: int
    step: int
    """Steps done (1 … total_steps)."""
    total_steps: int
    loss: float
    """Training loss of this step's batch."""
    checkpoint: Path | None = None
    """The checkpoint folder written after this step, if one was."""


def _learning_rate(config: DemoConfig, step: int) -> float:
    """Linear warm-up to the peak, then cosine decay to ``final_lr_fraction`` of it at the
    last step (a tenth by default)."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    low = config.final_lr_fraction
    return config.learning_rate * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress)))


def _windows(stream: torch.Tensor, config: DemoConfig, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` windows of ``seq_len`` tokens at random offsets of the stream."""
    starts = torch.randint(0, stream.numel() - config.seq_len, (config.batch_size,), generator=generator)
    return torch.stack([stream[s : s + config.seq_len] for s in starts.tolist()])


def train_family(
    out_dir: Path | str,
    config: DemoConfig | None = None,
    progress_callback: Callable[[TrainingProgress], None] | None = None,
) -> list[Path]:
    """Generate the corpus, train the tokenizer and train the family; return the model folders.

    One folder per width, smallest first, each holding ``checkpoint-<step>/`` folders at
    ``config.checkpoint_steps()``, the tokenizer and ``specprobe.json`` with
    ``tokens_per_step`` (so ``run_sweep`` records tokens seen). All models train on the
    same sequence of batches (one seeded generator per model, same seed) from their own
    seeded initialisation; the run is deterministic for a given seed and thread count.

    Cost: ``steps`` forward and backward passes per model of ``batch_size × seq_len``
    tokens; checkpoints take 4 bytes a parameter (76 KiB at width 16, 2 MiB at width 128)
    plus the tokenizer (about 15 KiB); the whole default demo writes about 25 MiB.

    Raises:
        SpecprobeError: on invalid settings, or when ``<out>/family`` already holds models
            (nothing is overwritten).
    """
    import transformers

    transformers.utils.logging.disable_progress_bar()  # save_pretrained's "Writing model shards"
    config = config or DemoConfig()
    layout = DemoLayout(Path(out_dir))
    _refuse_untrainable(config, layout)
    tokenizer, stream = _write_corpus(layout, config)
    steps = set(config.checkpoint_steps())
    models = zip(config.model_names(), config.widths, config.layers(), strict=True)
    return [
        _train_member(layout, config, tokenizer, stream, steps, index, name, width, layers, progress_callback)
        for index, (name, width, layers) in enumerate(models)
    ]


def _refuse_untrainable(config: DemoConfig, layout: DemoLayout) -> None:
    """Raise SpecprobeError, before anything is written, on invalid settings, a missing CUDA
    device, or an output directory whose ``family/`` already holds models."""
    config.validate()
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecprobeError(
            "expected a CUDA device for device='cuda', found none (torch.cuda.is_available() is False)",
            "run the preset on a machine with a GPU, or choose a CPU preset",
        )
    layout.check_own()
    if layout.family.exists() and any(layout.family.iterdir()):
        raise SpecprobeError(
            f"expected an empty or new output directory, found models in {layout.family}",
            "choose another output directory, or delete that one",
        )


def write_demo_file(path: Path, text: str) -> None:
    """One file of the demo's folder, through the one writer (atomic; never through a link
    it did not make, never into an input or the Hugging Face cache)."""
    atomic_write(path, text, what="the demo")


def _write_corpus(layout: DemoLayout, config: DemoConfig) -> tuple[Any, torch.Tensor]:
    """Write ``demo.json``, the training and held-out documents and the tokenizer trained on
    the former; return the tokenizer and the training token stream."""
    corpus_lexicon = LONGTAIL_LEXICON if config.corpus == "longtail" else {}
    lexicon = make_lexicon(config.seed, **corpus_lexicon)
    train_docs = generate_corpus(config.train_documents, config.seed, lexicon=lexicon, kind=config.corpus)
    # Held-out text: the same language (lexicon), documents drawn from another stream.
    eval_docs = generate_corpus(
        config.eval_documents, config.seed + 1_000_003, lexicon=lexicon, kind=config.corpus
    )
    write_demo_file(
        layout.marker, json.dumps({"specprobe_demo": 1}) + "\n"
    )  # first: the folder is the demo's
    write_demo_file(layout.config, json.dumps(config.to_dict(), indent=2) + "\n")
    write_demo_file(layout.train_corpus, "\n".join(train_docs) + "\n")
    write_demo_file(layout.eval_corpus, "\n".join(eval_docs) + "\n")
    tokenizer = train_tokenizer(train_docs, config.vocab_size)
    tokenizer.save_pretrained(layout.tokenizer)
    stream = token_stream(train_docs, tokenizer)
    if stream.numel() <= config.seq_len:
        raise SpecprobeError(
            f"expected more than seq_len={config.seq_len} training tokens, found {stream.numel()}",
            "raise train_documents",
        )
    return tokenizer, stream


def _train_member(
    layout: DemoLayout,
    config: DemoConfig,
    tokenizer: Any,
    stream: torch.Tensor,
    checkpoint_steps: set[int],
    index: int,
    name: str,
    width: int,
    layers: int,
    progress_callback: Callable[[TrainingProgress], None] | None,
) -> Path:
    """Train the family's ``index``-th model into its folder (the tokenizer, ``specprobe.json``
    and its checkpoints); return the folder."""
    folder = layout.model_dir(name)
    folder.mkdir(parents=True)
    tokenizer.save_pretrained(folder)
    device = torch.device(config.device)
    model = build_model(config, len(tokenizer), width, layers, seed=config.seed + index).to(device)
    metadata: dict[str, Any] = {
        "tokens_per_step": config.tokens_per_step,
        # the batch the optimiser saw: the sweep predicts χ_pos at it (train_batch_position)
        "train_batch_sequences": config.batch_size,
        "width": width,
        "layers": layers,
        "num_params": sum(p.numel() for p in model.parameters()),
        "demo_config": config.to_dict(),
    }
    write_demo_file(folder / "specprobe.json", json.dumps(metadata, indent=2) + "\n")
    losses = _train_one(
        model, tokenizer, name, index, stream, config, checkpoint_steps, folder, progress_callback
    )
    # The training-loss curve, averaged over blocks of steps, so that a reader (and the
    # reach study) can see whether the loss had flattened.
    block = max(1, config.steps // 64)
    metadata["train_loss_block"] = block
    metadata["train_loss"] = [float(np.mean(losses[i : i + block])) for i in range(0, len(losses), block)]
    write_demo_file(folder / "specprobe.json", json.dumps(metadata, indent=2) + "\n")
    return folder


def build_model(config: DemoConfig, vocab: int, width: int, layers: int, *, seed: int) -> Any:
    """One randomly initialised model of the family, in eval mode, eager attention.

    ``gpt_neox``: :func:`specprobe.models.tiny.tiny_causal_lm` (4·width MLP). ``llama``:
    LlamaForCausalLM with RMSNorm, rotary positions, a SwiGLU MLP of 3·width, as many
    key/value heads as query heads, an untied output head and no biases. ``lr_rule="mup-full"``:
    re-initialised by :func:`mup_initialise`.
    """
    from specprobe.models.tiny import tiny_causal_lm

    heads = max(1, width // config.head_dim)
    max_positions = max(config.seq_len, config.eval_seq_len)
    if config.arch == "gpt_neox":
        model = tiny_causal_lm(
            "gpt_neox",
            vocab_size=vocab,
            hidden_size=width,
            num_layers=layers,
            num_heads=heads,
            max_positions=max_positions,
            seed=seed,
        )
    else:
        model = _llama(config, vocab, width, layers, heads, max_positions, seed)
    if config.lr_rule == "mup-full":
        mup_initialise(model, config, width, seed=seed)
    return model.eval()


def _llama(
    config: DemoConfig, vocab: int, width: int, layers: int, heads: int, max_positions: int, seed: int
) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    eager: dict[str, Any] = {"attn_implementation": "eager"}  # forward-mode AD needs eager attention
    llama = LlamaConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=3 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        **eager,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(llama)


MUP_RULES = ("mup", "mup-full")
"""The learning-rate rules that scale with ``base_width / width``."""


def _embedding(name: str) -> bool:
    return "embed_in" in name or "embed_tokens" in name


def _readout(name: str) -> bool:
    return "lm_head" in name or "embed_out" in name


def mup_initialise(model: Any, config: DemoConfig, width: int, *, seed: int) -> None:
    """Re-initialise ``model`` in place as μP does (``lr_rule="mup-full"``), relative to the
    Hugging Face initialisation (normal, std ``initializer_range``) at ``base_width``.

    With m = base_width / width, as ``mup.set_base_shapes`` with ``MuReadout`` gives it:

    * hidden matrices (every ≥ 2-D weight but the embedding and the readout): std
      ``initializer_range · √m`` (∝ 1/√fan_in, equal to the HF init at the base width);
    * the readout (``lm_head`` / ``embed_out``): mup keeps its weight at a width-independent
      std and multiplies its output by m; a Hugging Face checkpoint has no such multiplier,
      so it is folded into the weight: std ``initializer_range · m`` (and, for Adam, the
      learning rate · m and weight decay / m of :func:`_param_groups`, which move the
      folded weight exactly as MuAdamW moves the unfolded one, but for Adam's ε and the
      global gradient-norm clip);
    * embeddings, norms and biases unchanged.

    The logits at initialisation therefore have std ∝ m·√width ∝ 1/√width (μP: the
    readout's variance ∝ 1/fan_in²), while every hidden coordinate keeps a width-independent size.
    Deterministic in ``seed``. Raises SpecprobeError for a readout tied to the embedding
    (μP needs them initialised and trained apart).
    """
    if getattr(model.config, "tie_word_embeddings", False):
        raise SpecprobeError(
            "expected an untied output head for lr_rule='mup-full', found tie_word_embeddings=True",
            "use lr_rule='mup' for a tied model, or untie its head",
        )
    std = float(model.config.initializer_range)
    m = config.base_width / width
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim < 2 or _embedding(name):
                continue
            scale = std * m if _readout(name) else std * math.sqrt(m)
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale)


def _param_groups(model: Any, config: DemoConfig, width: int) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on ≥ 2-D weights but embeddings; a learning-rate scale per
    group by ``config.lr_rule``. ``mup`` and ``mup-full``: base_width / width on every ≥ 2-D
    weight but the input embedding (the output head included); 1 elsewhere. ``mup-full``
    also multiplies those weights' decay by width / base_width, as ``mup.MuAdamW`` does, so
    that the decay per step (lr · weight decay) stays width-independent; ``mup`` leaves it
    as it was (the first round of the reach study ran so)."""
    hidden_scale = config.base_width / width if config.lr_rule in MUP_RULES else 1.0
    decay_scale = 1 / hidden_scale if config.lr_rule == "mup-full" else 1.0
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        matrix = p.ndim >= 2 and not _embedding(name)
        decay = p.ndim >= 2 and "embed" not in name
        groups.setdefault((matrix, decay), []).append(p)
    return [
        {
            "params": params,
            "weight_decay": config.weight_decay * (decay_scale if matrix else 1.0) if decay else 0.0,
            "lr_scale": hidden_scale if matrix else 1.0,
        }
        for (matrix, decay), params in groups.items()
    ]


def _train_one(
    model: Any,
    tokenizer: Any,
    name: str,
    index: int,
    stream: torch.Tensor,
    config: DemoConfig,
    checkpoint_steps: set[int],
    folder: Path,
    progress_callback: Callable[[TrainingProgress], None] | None,
) -> list[float]:
    """Train one model; return the training loss of every step."""
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(
        _param_groups(model, config, int(model.config.hidden_size)),
        lr=config.learning_rate,
        betas=(0.9, 0.98),
    )
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    losses: list[float] = []
    model.train()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step) * group["lr_scale"]
        ids = _windows(stream, config, generator).to(device)
        logits = model(input_ids=ids, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        saved = None
        if step + 1 in checkpoint_steps:
            saved = folder / f"checkpoint-{step + 1}"
            model.eval()
            model.save_pretrained(saved)  # the tokenizer is in the model's folder, as a Trainer does
            model.train()
        if progress_callback is not None:
            progress_callback(
                TrainingProgress(
                    model=name,
                    model_index=index,
                    num_models=len(config.widths),
                    step=step + 1,
                    total_steps=config.steps,
                    loss=losses[-1],
                    checkpoint=saved,
                )
            )
    model.eval()
    return losses

"""The training half of ``specprobe demo``: a synthetic language and a family of tiny models.

Everything is made here, from a seed, offline:

1. :func:`generate_corpus` writes documents of a small synthetic language (one a line):
   a Zipf-distributed lexicon of invented words, a grammar with number agreement between
   subject and verb across relative clauses, verbs that select the class of their subject,
   a topic per document that biases its nouns, and a protagonist whose name (drawn from
   hundreds) is introduced at the start of the document and recalled later, so that
   only copying from context predicts it. So the text has structure at every range: a
   unigram model, local syntax, agreement across a clause, recall across a document.
2. A byte-level BPE tokenizer is trained on the training documents (``tokenizers``,
   wrapped in ``PreTrainedTokenizerFast`` so that ``AutoTokenizer`` loads it back).
3. :func:`train_family` trains GPT-NeoX models of increasing width on the same token
   stream and saves Hugging Face checkpoints at log-spaced steps::

       <out>/demo.json                                   the DemoConfig
       <out>/data/train.txt, <out>/data/eval.txt        the corpus (eval: held-out documents)
       <out>/tokenizer/                                  the tokenizer
       <out>/family/<name>/checkpoint-<step>/            model.save_pretrained
       <out>/family/<name>/specprobe.json                {"tokens_per_step": ...}
       <out>/family/<name>/tokenizer files               so each checkpoint loads with it

The analysis half (``specprobe.sweep.run_sweep`` over ``<out>/family/*``, measured on the
held-out documents) is :func:`demo_plan`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from specprobe.errors import SpecprobeError
from specprobe.models import train_tokenizer

if TYPE_CHECKING:
    from specprobe.sweep import SweepPlan

TRAIN_FILE = "train.txt"
EVAL_FILE = "eval.txt"


# ---- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoConfig:
    """Everything that decides the demo's corpus, models, training and measurement.

    Defaults: four widths (18,880 to 495,104 parameters with the 384-token vocabulary),
    1,024 steps of 16 × 64 tokens (1,048,576 tokens, about 1.2 passes over the 12,000
    training documents), 8 checkpoints per model at steps 8, 16, …, 1024, each measured on
    32 held-out sequences of 64 tokens in 4 batches (D = 8 × 63 × 384 = 193,536 outputs per
    batch) with 16 Hutchinson probes. Measured on 2 CPU cores that other jobs shared: the
    whole demo took 271 s with torch's default 2 threads (training 236 s, the widest model
    half of it; analysis 36 s), and 194 s with one thread (training 157 s, analysis 37 s).
    :meth:`fast` is a small variant for tests and a first look (9 s in all on quiet cores).
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
    weight_decay: float = 0.01
    checkpoints: int = 8
    """Checkpoints per model, log-spaced from ``first_checkpoint`` to ``steps``."""
    first_checkpoint: int = 8
    # Measurement (the analysis half): D per batch = eval_batch_size × (eval_seq_len − 1) × vocab.
    eval_sequences: int = 32
    eval_seq_len: int = 64
    eval_batch_size: int = 8
    probes: int = 16

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
            eval_sequences=8,
            eval_seq_len=32,
            eval_batch_size=4,
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
        points = np.geomspace(self.first_checkpoint, self.steps, self.checkpoints)
        return tuple(sorted({round(float(p)) for p in points}))

    def model_names(self) -> tuple[str, ...]:
        return tuple(f"neox-w{w}" for w in self.widths)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["widths"] = list(self.widths)
        return out

    def validate(self) -> None:
        """Raise SpecprobeError on settings that cannot train or measure."""
        self.checkpoint_steps()
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
        if self.eval_sequences % self.eval_batch_size:
            raise SpecprobeError(
                f"expected eval_sequences to be a multiple of eval_batch_size, found "
                f"{self.eval_sequences} and {self.eval_batch_size}",
                "make eval_sequences a multiple of eval_batch_size",
            )


# ---- the synthetic language ------------------------------------------------------------------

_ONSETS = ["p", "t", "k", "b", "d", "g", "m", "n", "l", "r", "s", "v", "z", "f", "h", "br", "tr", "kl", "st"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "", "", "n", "l", "r", "s", "m"]

NOUN_PLURAL = "ri"
"""Suffix of plural nouns."""
VERB_SINGULAR, VERB_PLURAL = "ta", "mo"
"""Verb suffixes that agree in number with the subject."""
DET_SINGULAR, DET_PLURAL = "lo", "le"
RELATIVE, AND, SAID = "ke", "pa", "vosi"
"""Function words: 'that' (relative clause), 'and', 'says' (the recall sentence)."""


@dataclass(frozen=True)
class Lexicon:
    """The invented words of the language, by category, most frequent first."""

    nouns: tuple[str, ...]
    verbs: tuple[str, ...]
    adjectives: tuple[str, ...]
    names: tuple[str, ...]
    preps: tuple[str, ...]
    noun_class: tuple[int, ...]
    """The semantic class of each noun; each verb accepts subjects of one class."""
    verb_class: tuple[int, ...]


def make_lexicon(seed: int = 0, *, nouns: int = 240, verbs: int = 96, adjectives: int = 60) -> Lexicon:
    """Distinct invented words of 1–3 syllables (consonant–vowel–coda), drawn by ``seed``."""
    rng = np.random.default_rng([seed, 1])
    taken = {NOUN_PLURAL, VERB_SINGULAR, VERB_PLURAL, DET_SINGULAR, DET_PLURAL, RELATIVE, AND, SAID}

    def words(count: int, syllables: tuple[int, int]) -> tuple[str, ...]:
        out: list[str] = []
        while len(out) < count:
            n = int(rng.integers(syllables[0], syllables[1] + 1))
            word = "".join(
                _ONSETS[rng.integers(len(_ONSETS))]
                + _VOWELS[rng.integers(len(_VOWELS))]
                + (_CODAS[rng.integers(len(_CODAS))] if i == n - 1 else "")
                for i in range(n)
            )
            if word not in taken:
                taken.add(word)
                out.append(word)
        return tuple(out)

    noun_words = words(nouns, (1, 3))
    verb_words = words(verbs, (1, 2))
    adjective_words = words(adjectives, (2, 3))
    # Names are capitalised and longer, so a model cannot guess them from the lexicon's
    # frequencies: there are many, each rare, and only the document's own start tells which.
    name_words = tuple(w.capitalize() for w in words(400, (2, 3)))
    prep_words = words(8, (1, 1))
    classes = 4
    return Lexicon(
        nouns=noun_words,
        verbs=verb_words,
        adjectives=adjective_words,
        names=name_words,
        preps=prep_words,
        noun_class=tuple(int(c) for c in rng.integers(0, classes, nouns)),
        verb_class=tuple(i % classes for i in range(verbs)),
    )


def _zipf(n: int, exponent: float = 1.1) -> np.ndarray:
    """The cumulative distribution of p_r ∝ r^(−exponent) over ranks r = 1..n."""
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return np.cumsum(weights / weights.sum())


class _Grammar:
    """Samples documents of the language; all randomness from one numpy Generator."""

    TOPICS = 8
    TOPIC_SHARE = 0.6
    """Probability that a noun is drawn from the document's topic rather than the whole lexicon."""

    def __init__(self, lexicon: Lexicon, rng: np.random.Generator) -> None:
        self.lex = lexicon
        self.rng = rng
        n = len(lexicon.nouns)
        self.noun_cdf = _zipf(n)
        self.adj_cdf = _zipf(len(lexicon.adjectives))
        self.prep_cdf = _zipf(len(lexicon.preps), 0.8)
        # Each topic prefers its own nouns: a fixed random subset, Zipf-ranked within it.
        topic_rng = np.random.default_rng(len(lexicon.nouns))
        self.topic_nouns = [topic_rng.choice(n, size=n // 4, replace=False) for _ in range(self.TOPICS)]
        self.topic_cdf = _zipf(n // 4, 1.0)
        # Verbs by the class of subject they accept, Zipf-ranked within a class.
        self.verbs_of_class: dict[int, np.ndarray] = {}
        for c in set(lexicon.verb_class):
            self.verbs_of_class[c] = np.array([i for i, vc in enumerate(lexicon.verb_class) if vc == c])
        self.verb_cdf = {c: _zipf(len(v), 0.9) for c, v in self.verbs_of_class.items()}

    def draw(self, cdf: np.ndarray) -> int:
        """A rank drawn from a cumulative distribution."""
        return min(int(np.searchsorted(cdf, self.rng.random(), side="right")), len(cdf) - 1)

    def noun(self, topic: int) -> int:
        if self.rng.random() < self.TOPIC_SHARE:
            return int(self.topic_nouns[topic][self.draw(self.topic_cdf)])
        return self.draw(self.noun_cdf)

    def noun_phrase(self, topic: int) -> tuple[list[str], int, bool]:
        """Determiner, optional adjective, noun, in agreeing number: (words, noun index, plural)."""
        index = self.noun(topic)
        plural = bool(self.rng.random() < 0.35)
        words = [DET_PLURAL if plural else DET_SINGULAR]
        if self.rng.random() < 0.4:
            words.append(self.lex.adjectives[self.draw(self.adj_cdf)])
        words.append(self.lex.nouns[index] + (NOUN_PLURAL if plural else ""))
        return words, index, plural

    def verb(self, subject: int, plural: bool) -> str:
        """A verb that accepts the subject's class, agreeing with its number."""
        verb_class = self.lex.noun_class[subject]
        options = self.verbs_of_class[verb_class]
        stem = self.lex.verbs[int(options[self.draw(self.verb_cdf[verb_class])])]
        return stem + (VERB_PLURAL if plural else VERB_SINGULAR)

    def sentence(self, topic: int) -> list[str]:
        """Subject [ke object verb] verb object [prep object]: the main verb agrees with the
        subject across the relative clause, whose own verb agrees with its own subject."""
        subject, s_index, s_plural = self.noun_phrase(topic)
        words = list(subject)
        if self.rng.random() < 0.4:
            inner, i_index, i_plural = self.noun_phrase(topic)
            words += [RELATIVE, *inner, self.verb(i_index, i_plural)]
        words.append(self.verb(s_index, s_plural))
        words += self.noun_phrase(topic)[0]
        if self.rng.random() < 0.3:
            words.append(self.lex.preps[self.draw(self.prep_cdf)])
            words += self.noun_phrase(topic)[0]
        return words

    def document(self) -> str:
        """A protagonist introduced, sentences on one topic, and the protagonist recalled."""
        topic = int(self.rng.integers(self.TOPICS))
        name = self.lex.names[int(self.rng.integers(len(self.lex.names)))]
        # "<Name> verb-ta object ." : the name is a singular subject, of a topic noun's class.
        opening = [name, self.verb(self.noun(topic), False), *self.noun_phrase(topic)[0]]
        sentences = [opening]
        for _ in range(int(self.rng.integers(2, 6))):
            sentences.append(self.sentence(topic))
        # The recall: "vosi <Name> ." — predictable only by copying from the opening.
        sentences.append([AND, SAID, name])
        return " ".join(" ".join(s) + " ." for s in sentences)


def generate_corpus(num_documents: int, seed: int = 0, *, lexicon: Lexicon | None = None) -> list[str]:
    """``num_documents`` documents of the synthetic language, deterministic in ``seed``.

    The lexicon is drawn from ``seed`` too (so two corpora with the same seed and different
    lengths share it, and the first documents of the longer one are the shorter one);
    pass ``lexicon`` to draw documents of another seed in the same language (held-out text).
    """
    lex = lexicon if lexicon is not None else make_lexicon(seed)
    grammar = _Grammar(lex, np.random.default_rng([seed, 2]))
    return [grammar.document() for _ in range(num_documents)]


# ---- tokenizer -------------------------------------------------------------------------------


def token_stream(documents: Sequence[str], tokenizer: Any) -> torch.Tensor:
    """All documents tokenised and joined by the end-of-text token, as one int64 tensor."""
    eos = int(tokenizer.eos_token_id)
    ids: list[int] = []
    for chunk in tokenizer(list(documents), add_special_tokens=False)["input_ids"]:
        ids.extend(chunk)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


# ---- training --------------------------------------------------------------------------------


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

    def model_dir(self, name: str) -> Path:
        return self.family / name


def _learning_rate(config: DemoConfig, step: int) -> float:
    """Linear warm-up to the peak, then cosine decay to a tenth of it at the last step."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


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

    from specprobe.models import tiny_causal_lm

    transformers.utils.logging.disable_progress_bar()  # save_pretrained's "Writing model shards"
    config = config or DemoConfig()
    config.validate()
    layout = DemoLayout(Path(out_dir))
    if layout.family.exists() and any(layout.family.iterdir()):
        raise SpecprobeError(
            f"expected an empty or new output directory, found models in {layout.family}",
            "choose another output directory, or delete that one",
        )
    lexicon = make_lexicon(config.seed)
    train_docs = generate_corpus(config.train_documents, config.seed, lexicon=lexicon)
    # Held-out text: the same language (lexicon), documents drawn from another stream.
    eval_docs = generate_corpus(config.eval_documents, config.seed + 1_000_003, lexicon=lexicon)
    layout.data.mkdir(parents=True, exist_ok=True)
    layout.config.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    layout.train_corpus.write_text("\n".join(train_docs) + "\n", encoding="utf-8")
    layout.eval_corpus.write_text("\n".join(eval_docs) + "\n", encoding="utf-8")
    tokenizer = train_tokenizer(train_docs, config.vocab_size)
    tokenizer.save_pretrained(layout.tokenizer)
    stream = token_stream(train_docs, tokenizer)
    if stream.numel() <= config.seq_len:
        raise SpecprobeError(
            f"expected more than seq_len={config.seq_len} training tokens, found {stream.numel()}",
            "raise train_documents",
        )
    vocab = len(tokenizer)
    steps = set(config.checkpoint_steps())
    folders = []
    for index, (name, width) in enumerate(zip(config.model_names(), config.widths, strict=True)):
        folder = layout.model_dir(name)
        folder.mkdir(parents=True)
        tokenizer.save_pretrained(folder)
        metadata = {
            "tokens_per_step": config.tokens_per_step,
            "width": width,
            "demo_config": config.to_dict(),
        }
        (folder / "specprobe.json").write_text(json.dumps(metadata, indent=2) + "\n")
        model = tiny_causal_lm(
            "gpt_neox",
            vocab_size=vocab,
            hidden_size=width,
            num_layers=config.num_layers,
            num_heads=max(1, width // 16),
            max_positions=max(config.seq_len, config.eval_seq_len),
            seed=config.seed + index,
        )
        _train_one(model, tokenizer, name, index, stream, config, steps, folder, progress_callback)
        folders.append(folder)
    return folders


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
) -> None:
    generator = torch.Generator().manual_seed(config.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embed" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
        betas=(0.9, 0.98),
    )
    vocab = model.config.vocab_size
    model.train()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step)
        ids = _windows(stream, config, generator)
        logits = model(input_ids=ids, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
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
                    loss=float(loss.detach()),
                    checkpoint=saved,
                )
            )
    model.eval()


# ---- the analysis half -----------------------------------------------------------------------


def demo_plan(out_dir: Path | str, config: DemoConfig | None = None) -> SweepPlan:
    """The ``SweepPlan`` that measures every checkpoint of the trained family on the held-out
    documents (Hutchinson, ``config.probes`` probes per batch, the same token subset for all
    models: they share the tokenizer, so positions compare at equal D)."""
    from specprobe.data import DataSpec
    from specprobe.lnp import Estimator
    from specprobe.sweep import ModelSpec, ProbeSpec, SweepPlan

    config = config or DemoConfig()
    layout = DemoLayout(Path(out_dir))
    models = tuple(ModelSpec(id=str(layout.model_dir(name)), label=name) for name in config.model_names())
    data = DataSpec(
        dataset=str(layout.eval_corpus),
        num_sequences=config.eval_sequences,
        seq_len=config.eval_seq_len,
        batch_size=config.eval_batch_size,
        seed=config.seed,
    )
    probe = ProbeSpec(estimator=Estimator.HUTCHINSON_PER_SAMPLE, probes=config.probes, seed=config.seed)
    return SweepPlan(models=models, data=data, probe=probe)

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
3. :func:`train_family` trains models of increasing width (GPT-NeoX by default; Llama,
   and depth instead of width, in the presets) on the same token stream and saves
   Hugging Face checkpoints at log-spaced steps::

       <out>/demo.json                                   the DemoConfig
       <out>/data/train.txt, <out>/data/eval.txt        the corpus (eval: held-out documents)
       <out>/tokenizer/                                  the tokenizer
       <out>/family/<name>/checkpoint-<step>/            model.save_pretrained
       <out>/family/<name>/specprobe.json                {"tokens_per_step": ...}
       <out>/family/<name>/tokenizer files               so each checkpoint loads with it

The analysis half (``specprobe.pipeline.sweep.run_sweep`` over ``<out>/family/*``, measured on the
held-out documents) is :func:`demo_plan`. :data:`PRESETS` names the configurations of
``specprobe demo --preset``; :func:`generate_corpus` with ``kind="longtail"`` draws the
long-tail language of the Llama presets (:class:`_LongTailGrammar`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from specprobe.errors import SpecprobeError
from specprobe.models.hub import train_tokenizer

if TYPE_CHECKING:
    from specprobe.pipeline.plan import SweepPlan

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
    final_lr_fraction: float = 0.1
    """The learning rate at the last step as a fraction of the peak (cosine decay to it;
    1.0: constant after warm-up)."""
    weight_decay: float = 0.01
    checkpoints: int = 8
    """Checkpoints per model, log-spaced from ``first_checkpoint`` to ``steps``."""
    first_checkpoint: int = 8
    # Measurement (the analysis half): D per batch = eval_batch_size × (eval_seq_len − 1) × vocab.
    eval_sequences: int = 32
    eval_seq_len: int = 64
    eval_batch_size: int = 8
    probes: int = 16
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
    ``learning_rate``."""
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
            ("lr_rule", ("constant", "mup")),
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


IF, THEN, ALSO, COUNT_WORDS = "si", "tam", "eki", ("un", "du", "tri", "kar")
"""Function words of the long-tail language's rare constructions: 'if … then', 'also', and
the number words that announce a list of exactly that many nouns."""

LONGTAIL_LEXICON = {"nouns": 1500, "verbs": 300, "adjectives": 240}
"""Lexicon sizes of the long-tail language."""


class _LongTailGrammar(_Grammar):
    """The long-tail language: the same syntax over a larger lexicon with a heavier Zipf
    tail (exponent 1.0 over 1,500 nouns: half of all noun tokens come from beyond the 40
    commonest), plus rare constructions and long-range dependencies:

    * conditional (5% of sentences): ``si <clause> tam <subject noun again> <verb> …`` — the
      noun of the first clause is repeated after ``tam``, a copy within the sentence;
    * counted list (3%): ``kar lo n1 pa lo n2 pa lo n3 pa lo n4 <plural verb> …`` — the number
      word fixes how many nouns follow, and the verb is plural;
    * double relative clause (4%): two nested ``ke`` clauses, each verb agreeing with its own
      subject, the main verb with the outer subject across both;
    * a second character introduced mid-document (``eki <Name2> …``) and recalled at the end
      after the protagonist (``pa vosi <Name> eki <Name2> .``), and the document's topic
      noun recalled after them when the document has one: recall across the whole document.
    """

    TOPIC_SHARE = 0.5

    def __init__(self, lexicon: Lexicon, rng: np.random.Generator) -> None:
        super().__init__(lexicon, rng)
        self.noun_cdf = _zipf(len(lexicon.nouns), 1.0)
        self.adj_cdf = _zipf(len(lexicon.adjectives), 1.0)
        self.verb_cdf = {c: _zipf(len(v), 0.8) for c, v in self.verbs_of_class.items()}

    def clause(self, topic: int) -> tuple[list[str], int]:
        """Subject verb object; the subject's noun index."""
        subject, s_index, s_plural = self.noun_phrase(topic)
        return [*subject, self.verb(s_index, s_plural), *self.noun_phrase(topic)[0]], s_index

    def sentence(self, topic: int) -> list[str]:
        u = self.rng.random()
        if u < 0.05:  # conditional, with the subject noun copied after "tam"
            first, s_index = self.clause(topic)
            noun = self.lex.nouns[s_index]
            return [
                IF,
                *first,
                THEN,
                DET_SINGULAR,
                noun,
                self.verb(s_index, False),
                *self.noun_phrase(topic)[0],
            ]
        if u < 0.08:  # counted list: the number word fixes the count; the verb is plural
            count = int(self.rng.integers(1, len(COUNT_WORDS) + 1))
            words = [COUNT_WORDS[count - 1]]
            indices = []
            for i in range(count):
                index = self.noun(topic)
                words += [DET_SINGULAR, self.lex.nouns[index]] + ([AND] if i < count - 1 else [])
                indices.append(index)
            words.append(self.verb(indices[0], count > 1))
            return words + self.noun_phrase(topic)[0]
        if u < 0.12:  # two nested relative clauses
            outer, o_index, o_plural = self.noun_phrase(topic)
            middle, m_index, m_plural = self.noun_phrase(topic)
            inner, i_index, i_plural = self.noun_phrase(topic)
            return [
                *outer,
                RELATIVE,
                *middle,
                RELATIVE,
                *inner,
                self.verb(i_index, i_plural),
                self.verb(m_index, m_plural),
                self.verb(o_index, o_plural),
                *self.noun_phrase(topic)[0],
            ]
        return super().sentence(topic)

    def document(self) -> str:
        topic = int(self.rng.integers(self.TOPICS))
        names = self.lex.names
        name = names[int(self.rng.integers(len(names)))]
        second = names[int(self.rng.integers(len(names)))]
        topic_noun = self.noun(topic)
        opening = [name, self.verb(topic_noun, False), DET_SINGULAR, self.lex.nouns[topic_noun]]
        sentences = [opening]
        count = int(self.rng.integers(3, 8))
        for i in range(count):
            if i == count // 2:
                sentences.append(
                    [ALSO, second, self.verb(self.noun(topic), False), *self.noun_phrase(topic)[0]]
                )
            sentences.append(self.sentence(topic))
        sentences.append([AND, SAID, name, ALSO, second, self.lex.nouns[topic_noun]])
        return " ".join(" ".join(s) + " ." for s in sentences)


def generate_corpus(
    num_documents: int, seed: int = 0, *, lexicon: Lexicon | None = None, kind: str = "simple"
) -> list[str]:
    """``num_documents`` documents of the synthetic language, deterministic in ``seed``.

    The lexicon is drawn from ``seed`` too (so two corpora with the same seed and different
    lengths share it, and the first documents of the longer one are the shorter one);
    pass ``lexicon`` to draw documents of another seed in the same language (held-out text).
    ``kind="longtail"`` draws the long-tail language (:class:`_LongTailGrammar`; its
    default lexicon is :func:`make_lexicon` with :data:`LONGTAIL_LEXICON` sizes).
    """
    rng = np.random.default_rng([seed, 2])
    grammar: _Grammar
    if kind == "longtail":
        grammar = _LongTailGrammar(lexicon or make_lexicon(seed, **LONGTAIL_LEXICON), rng)
    else:
        grammar = _Grammar(lexicon or make_lexicon(seed), rng)
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
    config.validate()
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecprobeError(
            "expected a CUDA device for device='cuda', found none (torch.cuda.is_available() is False)",
            "run the preset on a machine with a GPU, or choose a CPU preset",
        )
    layout = DemoLayout(Path(out_dir))
    if layout.family.exists() and any(layout.family.iterdir()):
        raise SpecprobeError(
            f"expected an empty or new output directory, found models in {layout.family}",
            "choose another output directory, or delete that one",
        )
    corpus_lexicon = LONGTAIL_LEXICON if config.corpus == "longtail" else {}
    lexicon = make_lexicon(config.seed, **corpus_lexicon)
    train_docs = generate_corpus(config.train_documents, config.seed, lexicon=lexicon, kind=config.corpus)
    # Held-out text: the same language (lexicon), documents drawn from another stream.
    eval_docs = generate_corpus(
        config.eval_documents, config.seed + 1_000_003, lexicon=lexicon, kind=config.corpus
    )
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
    models = zip(config.model_names(), config.widths, config.layers(), strict=True)
    for index, (name, width, layers) in enumerate(models):
        folder = layout.model_dir(name)
        folder.mkdir(parents=True)
        tokenizer.save_pretrained(folder)
        model = build_model(config, vocab, width, layers, seed=config.seed + index).to(device)
        metadata: dict[str, Any] = {
            "tokens_per_step": config.tokens_per_step,
            "width": width,
            "layers": layers,
            "num_params": sum(p.numel() for p in model.parameters()),
            "demo_config": config.to_dict(),
        }
        (folder / "specprobe.json").write_text(json.dumps(metadata, indent=2) + "\n")
        losses = _train_one(model, tokenizer, name, index, stream, config, steps, folder, progress_callback)
        # The training-loss curve, averaged over blocks of steps, so that a reader (and the
        # reach study) can see whether the loss had flattened.
        block = max(1, config.steps // 64)
        metadata["train_loss_block"] = block
        metadata["train_loss"] = [float(np.mean(losses[i : i + block])) for i in range(0, len(losses), block)]
        (folder / "specprobe.json").write_text(json.dumps(metadata, indent=2) + "\n")
        folders.append(folder)
    return folders


def build_model(config: DemoConfig, vocab: int, width: int, layers: int, *, seed: int) -> Any:
    """One randomly initialised model of the family, in eval mode, eager attention.

    ``gpt_neox``: :func:`specprobe.models.hub.tiny_causal_lm` (4·width MLP). ``llama``:
    LlamaForCausalLM with RMSNorm, rotary positions, a SwiGLU MLP of 3·width, as many
    key/value heads as query heads, an untied output head and no biases.
    """
    from specprobe.models.hub import tiny_causal_lm

    heads = max(1, width // config.head_dim)
    max_positions = max(config.seq_len, config.eval_seq_len)
    if config.arch == "gpt_neox":
        return tiny_causal_lm(
            "gpt_neox",
            vocab_size=vocab,
            hidden_size=width,
            num_layers=layers,
            num_heads=heads,
            max_positions=max_positions,
            seed=seed,
        )
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
        model = LlamaForCausalLM(llama)
    return model.eval()


def _param_groups(model: Any, config: DemoConfig, width: int) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on ≥ 2-D weights but embeddings; a learning-rate scale per
    group by ``config.lr_rule`` (``mup``: base_width / width on every ≥ 2-D weight but the
    input embedding; 1 elsewhere)."""
    hidden_scale = config.base_width / width if config.lr_rule == "mup" else 1.0
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        embedding = "embed_in" in name or "embed_tokens" in name
        matrix = p.ndim >= 2 and not embedding
        decay = p.ndim >= 2 and "embed" not in name
        groups.setdefault((matrix, decay), []).append(p)
    return [
        {
            "params": params,
            "weight_decay": config.weight_decay if decay else 0.0,
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


# ---- the analysis half -----------------------------------------------------------------------


def demo_plan(out_dir: Path | str, config: DemoConfig | None = None) -> SweepPlan:
    """The ``SweepPlan`` that measures every checkpoint of the trained family on the held-out
    documents (or, with ``measure_on="train"``, the training documents; Hutchinson,
    ``config.probes`` probes per batch, the same token subset for all models: they share
    the tokenizer, so positions compare at equal D)."""
    from specprobe.choices import Device
    from specprobe.config import DataSpec, ProbeSpec
    from specprobe.core.measure import Estimator
    from specprobe.pipeline.plan import ModelSpec, SweepPlan

    config = config or DemoConfig()
    layout = DemoLayout(Path(out_dir))
    models = tuple(ModelSpec(id=str(layout.model_dir(name)), label=name) for name in config.model_names())
    corpus = layout.train_corpus if config.measure_on == "train" else layout.eval_corpus
    data = DataSpec(
        dataset=str(corpus),
        num_sequences=config.eval_sequences,
        seq_len=config.eval_seq_len,
        batch_size=config.eval_batch_size,
        seed=config.seed,
    )
    probe = ProbeSpec(
        estimator=Estimator.HUTCHINSON_PER_SAMPLE,
        probes=config.probes,
        seed=config.seed,
        device=Device(config.device),
    )
    return SweepPlan(models=models, data=data, probe=probe)


# ---- presets ---------------------------------------------------------------------------------

DEFAULT_PRESET = "tiny-neox"


@dataclass(frozen=True)
class Preset:
    """A named configuration of ``specprobe demo``, with a reduced size for its test."""

    name: str
    description: str
    config: DemoConfig
    reduced: DemoConfig
    """The same recipe shrunk to seconds (the test trains and measures it)."""
    budget: str
    """The stated cost, as measured (or, for a GPU preset not yet run, as sized)."""


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
        eval_sequences=32,
        eval_seq_len=64,
        eval_batch_size=8,
        probes=16,
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
        eval_sequences=32,
        eval_seq_len=128,
        eval_batch_size=8,
        probes=16,
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
        eval_batch_size=2,
        probes=2,
        device="cpu",
    )


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "tiny-neox",
            "the original demo: four GPT-NeoX models (widths 16 to 128, 19k to 495k parameters) "
            "on the simple synthetic language, one learning rate for all",
            DemoConfig(),
            _reduced(DemoConfig()),
            "about 3 minutes on 2 CPU cores",
        ),
        Preset(
            "tiny-neox-fast",
            "a smaller variant of tiny-neox for a first look (what --fast selects)",
            DemoConfig.fast(),
            _reduced(DemoConfig.fast()),
            "under a minute on 2 CPU cores",
        ),
        Preset(
            "llama-cpu",
            "five Llama models (RMSNorm, rotary, SwiGLU; widths 8 to 128, 2 layers) on the "
            "long-tail language, μP-style learning rates (hidden matrices at 4e-3·32/width)",
            _llama_cpu(),
            _reduced(_llama_cpu()),
            "219 s of CPU time with one thread (train and measure; 19.5 minutes of wall time on a "
            "shared machine that gave it a fifth of a core): well within 15 minutes on 2 idle cores",
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

"""The demo's synthetic language: a lexicon, two grammars, the corpus and its token stream.

:func:`generate_corpus` writes documents of a small synthetic language (one a line): a
Zipf-distributed lexicon of invented words, a grammar with number agreement between
subject and verb across relative clauses, verbs that select the class of their subject, a
topic per document that biases its nouns, and a protagonist whose name (drawn from
hundreds) is introduced at the start of the document and recalled later, so that only
copying from context predicts it. So the text has structure at every range: a unigram
model, local syntax, agreement across a clause, recall across a document. With
``kind="longtail"`` it draws the long-tail language of the Llama presets
(:class:`_LongTailGrammar`). :func:`token_stream` joins tokenised documents into the one
stream that training cuts windows from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

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


def token_stream(documents: Sequence[str], tokenizer: Any) -> torch.Tensor:
    """All documents tokenised and joined by the end-of-text token, as one int64 tensor."""
    eos = int(tokenizer.eos_token_id)
    ids: list[int] = []
    for chunk in tokenizer(list(documents), add_special_tokens=False)["input_ids"]:
        ids.extend(chunk)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)

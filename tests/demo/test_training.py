"""The training half of ``specprobe demo``: corpus, tokenizer, checkpoints, determinism."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from specprobe.demo.config import DemoConfig, DemoLayout
from specprobe.demo.language import (
    AND,
    DET_PLURAL,
    DET_SINGULAR,
    RELATIVE,
    SAID,
    VERB_PLURAL,
    VERB_SINGULAR,
    generate_corpus,
    make_lexicon,
)
from specprobe.demo.plan import demo_plan
from specprobe.demo.prepare import is_trained, prepare
from specprobe.demo.training import TrainingProgress, train_family
from specprobe.errors import SpecprobeError
from specprobe.models.fingerprint import fingerprint_weights
from specprobe.models.hub import find_checkpoints
from specprobe.models.loading import load_checkpoint

TINY = replace(
    DemoConfig.fast(),
    train_documents=300,
    eval_documents=30,
    widths=(8, 16),
    steps=6,
    checkpoints=2,
    first_checkpoint=2,
    seq_len=16,
    batch_size=4,
    eval_sequences=4,
    eval_seq_len=16,
    eval_batch_size=2,
    probes=2,
)


def test_corpus_is_deterministic_and_structured() -> None:
    docs = generate_corpus(200, seed=3)
    assert docs == generate_corpus(200, seed=3)
    assert docs[:50] == generate_corpus(50, seed=3)
    assert docs != generate_corpus(200, seed=4)
    lex = make_lexicon(3)
    verbs = {v + VERB_SINGULAR: "sg" for v in lex.verbs} | {v + VERB_PLURAL: "pl" for v in lex.verbs}
    checked = 0
    for doc in docs:
        assert "\n" not in doc
        sentences = [s.split() for s in doc.split(" .") if s.strip()]
        # Recall: the closing sentence names the protagonist of the opening one.
        assert sentences[-1] == [AND, SAID, sentences[0][0]]
        for words in sentences[1:-1]:
            # Agreement: the main verb (after a relative clause, the second verb) agrees with
            # the subject's determiner, across the clause.
            forms = [verbs[w] for w in words if w in verbs]
            main = forms[1] if RELATIVE in words else forms[0]
            assert words[0] in (DET_SINGULAR, DET_PLURAL)
            assert main == ("sg" if words[0] == DET_SINGULAR else "pl"), words
            checked += 1
    assert checked > 300
    # Zipf: the most frequent noun is far more frequent than the median one.
    counts = sorted((sum(d.split().count(n) for d in docs) for n in lex.nouns), reverse=True)
    assert counts[0] > 10 * max(1, counts[len(counts) // 2])


def test_checkpoint_steps_are_log_spaced() -> None:
    assert DemoConfig().checkpoint_steps()[-1] == DemoConfig().steps
    assert replace(DemoConfig(), steps=1000, first_checkpoint=10, checkpoints=3).checkpoint_steps() == (
        10,
        100,
        1000,
    )
    with pytest.raises(SpecprobeError, match="first_checkpoint"):
        replace(DemoConfig(), first_checkpoint=0).checkpoint_steps()
    with pytest.raises(SpecprobeError, match="multiples of 4"):
        replace(DemoConfig(), widths=(10,)).validate()


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], list[TrainingProgress]]:
    out = tmp_path_factory.mktemp("demo")
    events: list[TrainingProgress] = []
    return out, train_family(out, TINY, events.append), events


def test_train_family_writes_loadable_checkpoints(
    family: tuple[Path, list[Path], list[TrainingProgress]],
) -> None:
    out, folders, events = family
    layout = DemoLayout(out)
    assert folders == [layout.model_dir("neox-w8"), layout.model_dir("neox-w16")]
    assert layout.train_corpus.read_text().count("\n") == TINY.train_documents
    assert layout.eval_corpus.read_text().count("\n") == TINY.eval_documents
    for folder in folders:
        meta = json.loads((folder / "specprobe.json").read_text())
        assert meta["tokens_per_step"] == TINY.batch_size * TINY.seq_len
        checkpoints = find_checkpoints(str(folder))
        assert [c.revision for c in checkpoints] == ["checkpoint-2", "checkpoint-6"]
        loaded = load_checkpoint(checkpoints[-1])
        assert len(loaded.tokenizer) == TINY.vocab_size  # the trained BPE, not an empty stand-in
        assert loaded.model.config.vocab_size == TINY.vocab_size
        ids = loaded.tokenizer("Kala vosi lo tamri .", add_special_tokens=False)["input_ids"]
        assert len(ids) > 3
    assert loaded.num_params > 0
    assert [e.step for e in events if e.model == "neox-w8"] == list(range(1, TINY.steps + 1))
    assert {e.checkpoint.name for e in events if e.checkpoint} == {"checkpoint-2", "checkpoint-6"}
    # Nothing is overwritten.
    with pytest.raises(SpecprobeError, match="found models in"):
        train_family(out, TINY)


def test_same_seed_same_weights(
    family: tuple[Path, list[Path], list[TrainingProgress]], tmp_path: Path
) -> None:
    _, folders, _ = family
    again = train_family(tmp_path / "again", replace(TINY, widths=(8,)))
    other = train_family(tmp_path / "other", replace(TINY, widths=(8,), seed=1))

    def final(folder: Path) -> str:
        return fingerprint_weights(load_checkpoint(find_checkpoints(str(folder))[-1]).model)

    assert final(again[0]) == final(folders[0])
    assert final(other[0]) != final(folders[0])


def test_demo_plan_runs_through_the_sweep(
    family: tuple[Path, list[Path], list[TrainingProgress]], tmp_path: Path
) -> None:
    from specprobe.pipeline.sweep import run_sweep
    from specprobe.store.results import ResultStore

    out, folders, _ = family
    plan = demo_plan(out, TINY)
    assert [m.id for m in plan.models] == [str(f) for f in folders]
    result = run_sweep(plan, ResultStore(tmp_path / "run"))
    assert [r["status"] for r in result.records] == ["ok"] * 4
    assert [r["tokens_seen"] for r in result.records[:2]] == [2 * 64, 6 * 64]
    assert len({r["dataset_fingerprint"] for r in result.records}) == 1  # one shared token subset
    assert (
        result.records[0]["num_outputs"] == TINY.eval_batch_size * (TINY.eval_seq_len - 1) * TINY.vocab_size
    )


def test_prepare_reuses_only_a_finished_family_of_the_same_settings(
    family: tuple[Path, list[Path], list[TrainingProgress]], tmp_path: Path
) -> None:
    out, _, _ = family
    assert is_trained(DemoLayout(out), TINY)
    assert not is_trained(DemoLayout(out), replace(TINY, seed=1))
    assert not is_trained(DemoLayout(tmp_path / "none"), TINY)
    assert prepare(out, TINY).reused
    # Other settings in a folder that holds models: refused before anything is written.
    with pytest.raises(SpecprobeError, match="found models in"):
        prepare(out, replace(TINY, seed=1))
    assert is_trained(DemoLayout(out), TINY)

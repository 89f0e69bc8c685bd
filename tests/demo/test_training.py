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
        assert meta["train_batch_sequences"] == TINY.batch_size
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


def _init_scales(config: DemoConfig, width: int) -> tuple[float, float]:
    """(std of the first block's MLP output, std of the logits) at initialisation."""
    import torch

    from specprobe.demo.training import build_model

    model = build_model(config, 320, width, 2, seed=0)
    blocks = model.model.layers if config.arch == "llama" else model.gpt_neox.layers
    seen: dict[str, torch.Tensor] = {}
    hook = blocks[0].mlp.register_forward_hook(lambda _m, _i, out: seen.setdefault("mlp", out))
    ids = torch.randint(0, 320, (8, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    hook.remove()
    return float(seen["mlp"].std()), float(logits.std())


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_full_mup_keeps_hidden_coordinates_width_independent(arch: str) -> None:
    # mup's coordinate check at initialisation, widths 16–128 around base_width 32: every
    # hidden coordinate the same size; the logits ∝ 1/√width (readout variance ∝ 1/fan_in²,
    # mup's 1/width output multiplier). The learning-rate-only rule ("mup", Hugging Face's
    # constant init std) lets the hidden coordinates grow with width.
    widths = (16, 32, 64, 128)
    full = replace(DemoConfig(), arch=arch, lr_rule="mup-full", base_width=32)
    scales = [_init_scales(full, w) for w in widths]
    hidden = [h for h, _ in scales]
    assert max(hidden) / min(hidden) < 1.2
    rescaled = [logit * (w / 32) ** 0.5 for (_, logit), w in zip(scales, widths, strict=True)]
    assert max(rescaled) / min(rescaled) < 1.2
    lr_only = [_init_scales(replace(full, lr_rule="mup"), w)[0] for w in (16, 128)]
    assert lr_only[1] / lr_only[0] > 5


def test_full_mup_scales_decay_with_the_rates_and_trains(tmp_path: Path) -> None:
    from specprobe.demo.training import build_model, mup_initialise

    config = replace(TINY, arch="llama", lr_rule="mup-full", base_width=8, steps=24, learning_rate=1e-2)
    groups = groups_of(config)
    head, embedding = groups["lm_head.weight"], groups["model.embed_tokens.weight"]
    assert head["lr_scale"] == pytest.approx(0.5) and head["weight_decay"] == pytest.approx(0.02)
    assert embedding["lr_scale"] == 1.0 and embedding["weight_decay"] == 0.0
    old = groups_of(replace(config, lr_rule="mup"))
    assert old["lm_head.weight"]["weight_decay"] == pytest.approx(0.01)  # the first round's rule, kept
    # It trains: the loss falls over 24 steps for both widths.
    for folder in train_family(tmp_path, replace(config, widths=(8, 16))):
        curve = json.loads((folder / "specprobe.json").read_text())["train_loss"]
        assert curve[-1] < 0.9 * curve[0]
    tied = build_model(config, 320, 16, 1, seed=0)
    tied.config.tie_word_embeddings = True
    with pytest.raises(SpecprobeError, match="untied"):
        mup_initialise(tied, config, 16, seed=0)


def groups_of(config: DemoConfig) -> dict[str, dict[str, object]]:
    """The AdamW group of every parameter of a width-16, one-layer model, by name."""
    from specprobe.demo.training import _param_groups, build_model

    model = build_model(config, 320, 16, 1, seed=0)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in _param_groups(model, config, 16) for p in g["params"]}

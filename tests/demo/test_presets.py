"""Presets of ``specprobe demo``: each one's reduced size trains and measures; the long-tail
language; the Llama family; the learning-rate rule."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from specprobe.demo.config import DemoConfig
from specprobe.demo.language import (
    AND,
    COUNT_WORDS,
    IF,
    LONGTAIL_LEXICON,
    SAID,
    THEN,
    generate_corpus,
    make_lexicon,
)
from specprobe.demo.plan import demo_plan
from specprobe.demo.presets import DEFAULT_PRESET, PRESETS, preset
from specprobe.demo.training import _param_groups, build_model, train_family
from specprobe.errors import SpecprobeError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_trains_and_measures_at_its_reduced_size(name: str, tmp_path: Path) -> None:
    from specprobe.pipeline.sweep import run_sweep
    from specprobe.store.results import ResultStore

    p = PRESETS[name]
    p.config.validate()
    reduced = p.reduced
    # The reduced size keeps what makes the preset (architecture, corpus, rules), not its size.
    for field in ("arch", "corpus", "lr_rule", "measure_on"):
        assert getattr(reduced, field) == getattr(p.config, field)
    assert reduced.device == "cpu"
    folders = train_family(tmp_path, reduced)
    assert [f.name for f in folders] == list(reduced.model_names())
    meta = json.loads((folders[0] / "specprobe.json").read_text())
    assert len(meta["train_loss"]) == reduced.steps and meta["num_params"] > 0
    records = run_sweep(demo_plan(tmp_path, reduced), ResultStore(tmp_path / "run")).records
    assert [r["status"] for r in records] == ["ok"] * (2 * len(reduced.widths))
    assert all(r["spectral_position"] > 0 for r in records)


def test_presets_are_as_stated() -> None:
    assert PRESETS[DEFAULT_PRESET].config == DemoConfig()  # the original demo stays the default
    assert PRESETS["tiny-neox-fast"].config == DemoConfig.fast()
    for name in ("llama-cpu", "llama-gpu", "llama-cpu-long"):
        config = PRESETS[name].config
        assert config.arch == "llama" and config.corpus == "longtail" and config.lr_rule == "mup"
        if name == "llama-cpu-long":
            continue  # the study's longest configuration: 8 to 64 (20x)
        sizes = [
            sum(
                p.numel()
                for p in build_model(config, config.vocab_size, w, config.num_layers, seed=0).parameters()
            )
            for w in (config.widths[0], config.widths[-1])
        ]
        assert sizes[1] / sizes[0] >= 30, sizes  # sizes span at least a factor of 30 in N
    assert PRESETS["llama-gpu"].config.device == "cuda"
    assert "not yet run" in PRESETS["llama-gpu"].budget
    with pytest.raises(SpecprobeError, match="llama-cpu"):
        preset("llama")


def test_llama_family_is_llama() -> None:
    config = PRESETS["llama-cpu"].config
    model = build_model(config, 320, 32, 2, seed=0)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config._attn_implementation == "eager"
    assert model.config.intermediate_size == 96 and not model.config.tie_word_embeddings
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"LlamaRMSNorm", "LlamaMLP", "LlamaRotaryEmbedding"} <= kinds
    assert not any(n.endswith("bias") for n, _ in model.named_parameters())
    # Deterministic in the seed.
    again = build_model(config, 320, 32, 2, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True))


def test_mup_rule_scales_hidden_matrices_only() -> None:
    config = replace(PRESETS["llama-cpu"].config, base_width=32)
    model = build_model(config, 320, 128, 1, seed=0)
    names = {id(p): n for n, p in model.named_parameters()}
    scales = {names[id(p)]: g["lr_scale"] for g in _param_groups(model, config, 128) for p in g["params"]}
    assert scales["model.embed_tokens.weight"] == 1.0
    assert scales["lm_head.weight"] == pytest.approx(0.25)
    assert scales["model.layers.0.self_attn.q_proj.weight"] == pytest.approx(0.25)
    assert scales["model.layers.0.input_layernorm.weight"] == 1.0
    assert set(scales) == set(names.values())
    constant = _param_groups(model, replace(config, lr_rule="constant"), 128)
    assert {g["lr_scale"] for g in constant} == {1.0}


def test_longtail_language_has_its_constructions() -> None:
    docs = generate_corpus(400, seed=5, kind="longtail")
    assert docs == generate_corpus(400, seed=5, kind="longtail")
    lex = make_lexicon(5, **LONGTAIL_LEXICON)
    conditionals = counted = 0
    for doc in docs:
        sentences = [s.split() for s in doc.split(" .") if s.strip()]
        # Recall across the document: protagonist, second character, topic noun.
        name, topic_noun = sentences[0][0], sentences[0][-1]
        second = next(s[1] for s in sentences[1:-1] if s[0] == "eki")
        assert sentences[-1] == [AND, SAID, name, "eki", second, topic_noun]
        for words in sentences[1:-1]:
            if words[0] == IF:  # the subject noun is copied after "tam"
                conditionals += 1
                cut = words.index(THEN)
                before = words[1:cut] + [w.removesuffix("ri") for w in words[1:cut]]
                assert words[cut + 2] in before, words
            if words[0] in COUNT_WORDS:  # the number word fixes how many nouns are joined by "pa"
                counted += 1
                assert words.count(AND) == COUNT_WORDS.index(words[0]), words
    assert conditionals > 20 and counted > 10
    # A heavier tail: more distinct nouns than the simple language uses at the same length.
    simple = generate_corpus(400, seed=5)
    nouns, simple_nouns = set(lex.nouns), set(make_lexicon(5).nouns)
    used = {w for d in docs for w in d.split() if w in nouns}
    used_simple = {w for d in simple for w in d.split() if w in simple_nouns}
    assert len(used) > 2 * len(used_simple)


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecprobeError, match="arch"):
        replace(DemoConfig(), arch="gpt2").validate()
    with pytest.raises(SpecprobeError, match="one depth"):
        replace(DemoConfig(), depths=(1, 2)).validate()
    if not torch.cuda.is_available():
        with pytest.raises(SpecprobeError, match="CUDA"):
            train_family(tmp_path / "gpu", PRESETS["llama-gpu"].config)
        assert not (tmp_path / "gpu").exists()  # refused before anything is written


def test_depth_family_names_and_layers(tmp_path: Path) -> None:
    config = replace(PRESETS["llama-cpu"].reduced, widths=(8, 8), depths=(1, 2))
    assert config.model_names() == ("llama-w8-d1", "llama-w8-d2")
    folders = train_family(tmp_path, config)
    assert [json.loads((f / "specprobe.json").read_text())["layers"] for f in folders] == [1, 2]


def test_cli_demo_preset(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from specprobe.cli.app import app

    runner = CliRunner()
    result = runner.invoke(app, ["demo", "--preset", "nope", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "llama-cpu" in result.output
    result = runner.invoke(app, ["demo", "--fast", "--preset", "llama-cpu", "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "--fast" in result.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()

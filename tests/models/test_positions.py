"""Training positions as the published families name their checkpoints; runs, seeds and
the one invariant: checkpoints ordered by training position, never by the order typed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from specprobe.analysis.family import Outcome, summarize
from specprobe.analysis.position import group_by_model, ordered
from specprobe.errors import SpecprobeError
from specprobe.models.positions import (
    CONVENTIONS,
    Source,
    Stated,
    StatedPosition,
    known,
    locate,
    parse_revision,
    parse_step,
    registry,
    stated_positions,
    stated_stage_tokens,
)
from specprobe.recipes.revisions import pythia_schedule
from specprobe.report.document import build_document
from specprobe.report.tables import model_table
from specprobe.report.terminal import render_run

B = 10**9

# (hub id, revision) → (run, step, tokens, chunk, where the step came from), as the model
# cards state them (2026).
PUBLISHED = [
    (
        "EleutherAI/pythia-1.4b",
        "step1000",
        "EleutherAI/pythia-1.4b",
        1000,
        1000 * 2_097_152,
        None,
        Source.REVISION,
    ),
    ("EleutherAI/pythia-14m", "step0", "EleutherAI/pythia-14m", 0, 0, None, Source.REVISION),
    (
        "EleutherAI/pythia-160m-seed3",
        "step143000",
        "EleutherAI/pythia-160m-seed3",
        143000,
        143000 * 2_097_152,
        None,
        Source.REVISION,
    ),
    (
        "EleutherAI/pythia-70m-deduped",
        "main",
        "EleutherAI/pythia-70m-deduped",
        143000,
        143000 * 2_097_152,
        None,
        Source.REGISTRY,
    ),
    (
        "allenai/OLMo-1B-hf",
        "step20000-tokens84B",
        "allenai/OLMo-1B-hf",
        20000,
        20000 * 4_194_304,
        None,
        Source.REVISION,
    ),
    # OLMo-2: tokens from step × batch (the label's 9B is rounded up from 8.39B)
    (
        "allenai/OLMo-2-1124-7B",
        "stage1-step2000-tokens9B",
        "allenai/OLMo-2-1124-7B",
        2000,
        2000 * 4_194_304,
        None,
        Source.REVISION,
    ),
    (
        "allenai/OLMo-2-0425-1B",
        "stage1-step10000-tokens21B",
        "allenai/OLMo-2-0425-1B",
        10000,
        10000 * 2_097_152,
        None,
        Source.REVISION,
    ),
    # stage 2 restarts the step counter: a sibling run per ingredient, tokens unknown
    (
        "allenai/OLMo-2-1124-7B",
        "stage2-ingredient1-step1000-tokens5B",
        "allenai/OLMo-2-1124-7B stage2-ingredient1",
        1000,
        None,
        None,
        Source.REVISION,
    ),
    (
        "allenai/Olmo-3-1025-7B",
        "stage1-step5000",
        "allenai/Olmo-3-1025-7B",
        5000,
        None,
        None,
        Source.REVISION,
    ),
    ("LLM360/Amber", "ckpt_000100", "LLM360/Amber", None, None, 100, Source.REVISION),
    (
        "stanford-crfm/alias-gpt2-small-x21",
        "checkpoint-1000",
        "stanford-crfm/alias-gpt2-small-x21",
        1000,
        1000 * 524_288,
        None,
        Source.REVISION,
    ),
    (
        "HuggingFaceTB/SmolLM2-1.7B-intermediate-checkpoints",
        "step-125000",
        "HuggingFaceTB/SmolLM2-1.7B",
        125000,
        None,
        None,
        Source.REVISION,
    ),
    (
        "HuggingFaceTB/SmolLM3-3B-checkpoints",
        "stage2-step-40000",
        "HuggingFaceTB/SmolLM3-3B",
        40000,
        None,
        None,
        Source.REVISION,
    ),
    (
        "TinyLlama/TinyLlama-1.1B-intermediate-step-480k-1007B",
        "main",
        "TinyLlama/TinyLlama-1.1B",
        480000,
        480000 * 2_097_152,
        None,
        Source.REGISTRY,
    ),
    (
        "google/multiberts-seed_0-step_20k",
        "main",
        "google/multiberts-seed_0",
        20000,
        20000 * 131_072,
        None,
        Source.REGISTRY,
    ),
    (
        "google/multiberts-seed_0",
        "main",
        "google/multiberts-seed_0",
        2_000_000,
        2_000_000 * 131_072,
        None,
        Source.REGISTRY,
    ),
    (
        "bigscience/bloom-560m-intermediate",
        "global_step1000",
        "bigscience/bloom-560m-intermediate",
        1000,
        None,
        None,
        Source.REVISION,
    ),
    ("acme/tiny", "main", "acme/tiny", None, None, None, None),
]


@pytest.mark.parametrize(("model", "revision", "run", "step", "tokens", "chunk", "source"), PUBLISHED)
def test_positions_as_the_model_cards_state_them(
    model: str,
    revision: str,
    run: str,
    step: int | None,
    tokens: int | None,
    chunk: int | None,
    source: Source | None,
) -> None:
    where = locate(model, revision)
    assert (where.run, where.step, where.tokens, where.chunk, where.source) == (
        run,
        step,
        tokens,
        chunk,
        source,
    )


def test_label_tokens_agree_with_step_times_batch_within_their_rounding() -> None:
    """The registry's tokens per step reproduce the tokens the revision names state (those
    are rounded: OLMo to the billion, OLMo-2 up to it)."""
    for model, revision in [
        ("allenai/OLMo-1B-hf", "step20000-tokens84B"),
        ("allenai/OLMo-2-1124-7B", "stage1-step1000-tokens5B"),
        ("allenai/OLMo-2-1124-7B", "stage1-step2000-tokens9B"),
        ("allenai/OLMo-2-0425-1B", "stage1-step1907359-tokens4001B"),
        ("TinyLlama/TinyLlama-1.1B-intermediate-step-480k-1007B", "main"),
    ]:
        where = locate(model, revision)
        parsed, entry = parse_revision(revision), known(model)
        labelled = parsed.tokens if parsed is not None and parsed.tokens else entry.tokens if entry else None
        assert where.tokens is not None and labelled is not None
        assert abs(where.tokens - labelled) < B, (model, revision, where.tokens, labelled)


def test_every_convention_parses_its_example() -> None:
    for convention in CONVENTIONS:
        for example in convention.example.split(", "):
            parsed = parse_revision(example)
            assert parsed is not None and parsed.convention == convention.name, example


def test_the_registry_knows_the_published_ids() -> None:
    assert len(registry()) >= 10
    for model in (
        "EleutherAI/pythia-12b",
        "allenai/OLMo-2-1124-13B",
        "LLM360/K2",
        "stanford-crfm/expanse-gpt2-small-x777",
    ):
        assert known(model) is not None, model
    assert known("EleutherAI/pythia-160m-seed3").seed == 3  # type: ignore[union-attr]
    assert known("stanford-crfm/darkmatter-gpt2-small-x343").seed == 343  # type: ignore[union-attr]
    assert known("acme/pythia-1b") is None


_OLD = re.compile(r"(?:^|[-_])(?:step|checkpoint)[-_]?(\d+)$|^step(\d+)$")


def _old_step(name: str) -> int | None:
    match = _OLD.search(name)
    return None if match is None else int(match.group(1) or match.group(2))


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.sampled_from(["", "run", "my-run", "final", "x_y"]),
    sep=st.sampled_from(["", "-", "_"]),
    word=st.sampled_from(["step", "checkpoint"]),
    inner=st.sampled_from(["", "-", "_"]),
    number=st.integers(0, 10**7),
)
def test_step_and_checkpoint_names_keep_their_earlier_reading(
    prefix: str, sep: str, word: str, inner: str, number: int
) -> None:
    """Pythia stepN, CRFM and Trainer checkpoint-N and the other step-suffixed names read
    as the earlier regular expression read them."""
    name = f"{prefix}{sep if prefix else ''}{word}{inner}{number}"
    assert parse_step(name) == _old_step(name), name


def test_pythia_schedule_every_revision_has_its_step() -> None:
    schedule = pythia_schedule()
    assert len(schedule) == 154
    steps = [locate("EleutherAI/pythia-410m", r).step for r in schedule]
    assert steps == [0, *(2**i for i in range(10)), *range(1000, 143001, 1000)]


def test_stated_positions_win_and_a_stated_rule_is_never_ignored() -> None:
    stated = Stated(positions={"ckpt_000100": StatedPosition(1000, 4 * B)})
    where = locate("LLM360/Amber", "ckpt_000100", stated)
    assert (where.step, where.tokens, where.source, where.tokens_source) == (
        1000,
        4 * B,
        Source.STATED,
        Source.STATED,
    )
    # Stated tokens per step override the registry's.
    assert locate("EleutherAI/pythia-70m", "step10", Stated(tokens_per_step=7)).tokens == 70
    with pytest.raises(SpecprobeError, match="data chunk"):
        locate("LLM360/Amber", "ckpt_000100", Stated(tokens_per_step=4096))
    with pytest.raises(SpecprobeError, match="no known step"):
        locate("acme/tiny", "main", Stated(tokens_per_step=4096))
    with pytest.raises(SpecprobeError, match="--stage-tokens stage2-ingredient1"):
        locate("allenai/OLMo-2-1124-7B", "stage2-ingredient1-step10-tokens1B", Stated(tokens_per_step=4096))
    # With the stage's start stated, stage 2 joins the main run at that offset.
    joined = locate(
        "allenai/OLMo-2-1124-7B",
        "stage2-ingredient1-step10-tokens1B",
        Stated(stage_tokens=stated_stage_tokens(["stage2=3896B"])),
    )
    assert joined.run == "allenai/OLMo-2-1124-7B" and joined.tokens == 3896 * B + 10 * 4_194_304
    # OLMo-3 states no tokens per step: a stage placed by tokens needs them.
    with pytest.raises(SpecprobeError, match="--tokens-per-step N"):
        locate("allenai/Olmo-3-1025-7B", "stage2-step10", Stated(stage_tokens={"stage2": 5 * B}))
    placed = locate(
        "allenai/Olmo-3-1025-7B", "stage2-step10", Stated(tokens_per_step=100, stage_tokens={"stage2": 5 * B})
    )
    assert (placed.run, placed.tokens) == ("allenai/Olmo-3-1025-7B", 5 * B + 1000)


def test_stated_maps_from_the_command_line_and_recipes() -> None:
    assert stated_positions(["a=10", "b=20:4B", "c=:1T"]) == {
        "a": StatedPosition(10),
        "b": StatedPosition(20, 4 * B),
        "c": StatedPosition(None, 10**12),
    }
    assert stated_positions({"a": 10, "b": {"step": 2, "tokens": "3B"}}) == {
        "a": StatedPosition(10),
        "b": StatedPosition(2, 3 * B),
    }
    for bad in (["a=x"], ["a=-1"], ["a="], {"a": {"steps": 1}}, "a=1"):
        with pytest.raises(SpecprobeError):
            stated_positions(bad)
    with pytest.raises(SpecprobeError, match="stage name"):
        stated_stage_tokens(["ingredient1=4B"])


def test_trainer_state_gives_step_and_tokens_of_a_local_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "final"
    folder.mkdir()
    (folder / "trainer_state.json").write_text('{"global_step": 640, "num_input_tokens_seen": 81920}')
    where = locate(str(tmp_path), "final", path=folder)
    assert (where.step, where.tokens) == (640, 81920)
    assert (where.source, where.tokens_source) == (Source.TRAINER_STATE, Source.TRAINER_STATE)
    # The folder's name wins over trainer_state.json's step (more trusted), and specprobe.json's
    # tokens per step over its tokens.
    named = tmp_path / "checkpoint-600"
    named.mkdir()
    (named / "trainer_state.json").write_text('{"global_step": 640}')
    assert locate(str(tmp_path), "checkpoint-600", path=named, metadata_tokens_per_step=10).tokens == 6000


# ---- the invariant: the report and the verdict are the same whatever order records come in


def _record(
    model: str,
    revision: str,
    position: float,
    params: int,
    *,
    loss: float = 3.0,
    chi: float = 1e6,
    **extra: Any,
) -> dict[str, Any]:
    where = locate(model, revision)
    return {
        "model": model,
        "label": where.run,
        "revision": revision,
        **where.record_fields(),
        "num_params": params,
        "status": "ok",
        "duplicate_of": None,
        "loss": loss,
        "loss_stderr": 0.01,
        "chi_net": chi,
        "chi_net_stderr": chi * 0.01,
        "spectral_position": position / 1000,
        "spectral_position_stderr": 0.01 / 1000,
        "normalized_position": position,
        "normalized_position_stderr": 0.01,
        "num_outputs": 1000,
        **extra,
    }


def _family() -> list[dict[str, Any]]:
    """OLMo-2 at three sizes (stage 1), a stage-2 sibling, and an LLM360 run by chunk: the
    later checkpoint has the lower position and loss in each run."""
    out = []
    for model, params in (
        ("allenai/OLMo-2-0425-1B", 1000),
        ("allenai/OLMo-2-1124-7B", 7000),
        ("allenai/OLMo-2-1124-13B", 13000),
    ):
        scale = 1000 / params
        out.append(_record(model, "stage1-step1000-tokens5B", 3.0, params, loss=6.0, chi=1e6))
        out.append(_record(model, "stage1-step2000-tokens9B", 2.0 * scale, params, loss=4.0 * scale, chi=3e6))
        out.append(
            _record(model, "stage1-step10000-tokens42B", 1.0 * scale, params, loss=3.0 * scale, chi=5e6)
        )
    out.append(_record("allenai/OLMo-2-1124-7B", "stage2-ingredient1-step100-tokens1B", 0.5, 7000, loss=0.4))
    out.append(_record("allenai/OLMo-2-1124-7B", "stage2-ingredient1-step20-tokens1B", 0.9, 7000, loss=0.5))
    out.append(_record("LLM360/Amber", "ckpt_000300", 0.5, 500, loss=2.0))
    out.append(_record("LLM360/Amber", "ckpt_000100", 2.0, 500, loss=4.0))
    # MultiBERTs: one repository per checkpoint, two seeds of one size
    for seed in (0, 1):
        for k, p in ((20, 2.5), (200, 1.2 + 0.1 * seed)):
            out.append(_record(f"google/multiberts-seed_{seed}-step_{k}k", "main", p, 3000, loss=p + 1))
    # a run without positions
    out.append(_record("acme/tiny", "best", 1.0, 200, loss=3.0))
    out.append(_record("acme/tiny", "final", 1.5, 200, loss=3.5))
    return out


def _rendered(records: list[dict[str, Any]]) -> tuple[Any, ...]:
    summary = summarize(records)
    document = build_document(records)
    return (
        summary.to_dict(),
        document.models,
        document.comparison,
        document.family,
        document.notes,
    )


@settings(max_examples=30, deadline=None)
@given(st.randoms(use_true_random=False))
def test_report_and_verdict_do_not_depend_on_the_order_typed(random: Any) -> None:
    """The records as a sweep writes them, the models in plan order, each run's revisions
    (and repositories) in any typed order: the same report and verdict."""
    records = _family()
    blocks: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        blocks.setdefault(r["run"], []).append(r)
    typed = []
    for rows in blocks.values():
        rows = list(rows)
        random.shuffle(rows)
        typed += rows
    assert _rendered(typed) == _rendered(records)


@settings(max_examples=30, deadline=None)
@given(st.permutations(list(range(len(_family())))))
def test_the_family_view_does_not_depend_on_any_order(order: list[int]) -> None:
    """Even records in any order at all (runs interleaved): the same family view, verdict
    and notes (only the order of the per-run sections follows the runs' first records)."""
    records = _family()
    shuffled = [records[i] for i in order]
    assert summarize(shuffled).to_dict() == summarize(records).to_dict()
    assert build_document(shuffled).family == build_document(records).family
    assert build_document(shuffled).notes == build_document(records).notes


def test_runs_are_ordered_by_training_position() -> None:
    groups = group_by_model(_family())
    assert [r["revision"] for r in groups["allenai/OLMo-2-1124-7B"]] == [
        "stage1-step1000-tokens5B",
        "stage1-step2000-tokens9B",
        "stage1-step10000-tokens42B",
    ]
    assert [r["revision"] for r in groups["allenai/OLMo-2-1124-7B stage2-ingredient1"]] == [
        "stage2-ingredient1-step20-tokens1B",
        "stage2-ingredient1-step100-tokens1B",
    ]
    assert [r["revision"] for r in groups["LLM360/Amber"]] == ["ckpt_000100", "ckpt_000300"]
    summary = summarize(_family())
    verdict = summary.verdict
    assert verdict.claim("position_falls").outcome is Outcome.SUPPORTED
    # The stage-2 sibling has the 7B's size: averaged with it as runs of one size, not seeds.
    (seven,) = [g for g in summary.sizes if g.num_params == 7000]
    assert (seven.seeds, seven.kind, seven.label) == (2, "runs", "allenai/OLMo-2-1124-7B (2 runs)")
    assert "runs of equal size averaged per size" in verdict.opening
    assert verdict.claim("loss_falls_with_size").outcome is not Outcome.CONTRADICTED


def test_a_run_without_positions_is_reported_unordered_and_judged_without_order() -> None:
    records = [
        _record("acme/tiny", "main", 1.0, 100, loss=3.0),
        _record("acme/tiny", "best", 3.0, 100, loss=5.0),
        _record("acme/tiny", "v2", 2.0, 100, loss=4.0),
    ]
    assert not ordered(records)
    verdict = summarize(records).verdict
    assert verdict.claim("position_falls").outcome is Outcome.UNTESTABLE
    assert "no training position is known" in verdict.claim("position_falls").summary
    assert verdict.claim("chi_net_grows").outcome is Outcome.UNTESTABLE
    document = build_document(records)
    assert any("no training position known for best, main, v2" in n.text for n in document.notes)
    table = document.models[0].table
    assert "χ_net/χ_net₀" not in [c.header for c in table.columns]
    assert [row[0].text for row in table.rows] == ["best", "main", "v2"]  # by name, a fixed order


def test_a_chunk_is_never_shown_as_a_parsed_step() -> None:
    rows = [
        _record("LLM360/Amber", "ckpt_000100", 2.0, 500),
        _record("LLM360/Amber", "ckpt_000200", 1.0, 500),
    ]
    table = model_table("LLM360/Amber", rows)
    headers = [c.header for c in table.columns]
    assert headers[0] == "revision" and "chunk" in headers
    assert [row[0].text for row in table.rows] == ["ckpt_000100", "ckpt_000200"]
    assert [row[headers.index("chunk")].text for row in table.rows] == ["100", "200"]
    notes = [n.text for n in build_document(rows).notes]
    assert any("ordered by data chunk (ckpt_NNN), not by step" in n for n in notes)


# ---- runs across repositories and seeds


def test_separate_repositories_form_one_run() -> None:
    records = [
        _record(f"google/multiberts-seed_0-step_{k}k", "main", p, 110_000, loss=lo)
        for k, p, lo in ((200, 1.0, 2.0), (20, 3.0, 4.0), (40, 2.0, 3.0))
    ]
    groups = group_by_model(records)
    assert list(groups) == ["google/multiberts-seed_0"]
    assert [r["step"] for r in groups["google/multiberts-seed_0"]] == [20_000, 40_000, 200_000]
    summary = summarize(records)
    assert len(summary.reach) == 1 and summary.verdict.claim("position_falls").outcome is Outcome.SUPPORTED
    table = build_document(records).models[0].table
    assert [row[0].text for row in table.rows] == [
        "google/multiberts-seed_0-step_20k",
        "google/multiberts-seed_0-step_40k",
        "google/multiberts-seed_0-step_200k",
    ]


def _seeds(sizes: dict[str, int], seeds: int) -> list[dict[str, Any]]:
    out = []
    for size, params in sizes.items():
        for seed in range(1, seeds + 1):
            reach = 2.0 * params**-0.2 * (1 + 0.01 * seed)
            model = f"EleutherAI/pythia-{size}-seed{seed}"
            out.append(_record(model, "step1000", 3.0, params, loss=6.0))
            out.append(
                _record(model, "step143000", reach, params, loss=5.0 * params**-0.1 * (1 + 0.01 * seed))
            )
    return out


def test_seeds_of_one_size_are_averaged_and_never_fitted_as_sizes() -> None:
    two = summarize(_seeds({"14m": 14_000, "70m": 70_000}, 3))
    assert [g.seeds for g in two.sizes] == [3, 3]
    assert two.reach_fit is None and two.loss_fit is None  # two sizes: no law, whatever the runs
    assert two.verdict.opening.startswith("Across 6 runs of 2 sizes (seeds averaged per size")
    three = summarize(_seeds({"14m": 14_000, "70m": 70_000, "160m": 160_000}, 2))
    assert three.reach_fit is not None and three.reach_fit.num_points == 3
    for group in three.sizes:
        runs = [r for r in three.reach if r.num_params == group.num_params]
        values = [r.reach for r in runs]
        mean = sum(values) / 2
        spread = abs(values[0] - values[1]) / 2**0.5  # std (ddof 1) of two values
        assert group.reach == pytest.approx(mean, rel=1e-12)
        assert group.reach_spread == pytest.approx(spread, rel=1e-9)
        assert group.reach_stderr == pytest.approx(spread / 2**0.5, rel=1e-9)
    assert three.reach_fit.values == pytest.approx(tuple(g.reach for g in three.sizes))
    reach_table = build_document(_seeds({"14m": 14_000, "70m": 70_000}, 3)).family.reach  # type: ignore[union-attr]
    headers = [c.header for c in reach_table.columns]
    assert headers.count("seed spread") == 1 and all(len(row) == len(headers) for row in reach_table.rows)
    column = headers.index("seed spread")
    assert all(row[column].text.endswith("(3 seeds)") for row in reach_table.rows)
    # One size, several seeds: rendered whole, with the seed spread and no size law.
    printed = Console(width=200, record=True)
    render_run(_seeds({"14m": 14_000}, 2), printed)
    text = printed.export_text()
    assert "seed spread" in text and "Across 2 runs of 1 size" in text


def test_recipes_state_runs_seeds_and_positions(tmp_path: Path) -> None:
    from specprobe.recipes.recipe import RecipeError, load_recipe

    path = tmp_path / "mine.yaml"
    path.write_text(
        "version: 1\n"
        "family: {name: mine, description: two repositories as one run, stage_tokens: {stage2: 3896B}}\n"
        "models:\n"
        "  - {id: me/run-early, run: me/run, seed: 4, positions: {me/run-early: 1000}}\n"
        "  - {id: me/run-late, run: me/run, seed: 4, positions: {me/run-late: {step: 2000, tokens: 4B}}}\n"
    )
    plan = load_recipe(path).to_plan()
    assert [(m.run, m.seed, dict(m.positions), dict(m.stage_tokens)) for m in plan.models] == [
        ("me/run", 4, {"me/run-early": StatedPosition(1000)}, {"stage2": 3896 * B}),
        ("me/run", 4, {"me/run-late": StatedPosition(2000, 4 * B)}, {"stage2": 3896 * B}),
    ]
    where = locate("me/run-late", "main", plan.models[1].stated())
    assert (where.run, where.step, where.tokens, where.seed, where.source) == (
        "me/run",
        2000,
        4 * B,
        4,
        Source.STATED,
    )
    path.write_text(
        "version: 1\nfamily: {name: mine}\nmodels:\n  - {id: me/a, positions: {main: {steps: 1}}}\n"
    )
    with pytest.raises(
        RecipeError, match=r"mine.yaml: models\[0\].positions.main: expected keys step and tokens"
    ):
        load_recipe(path)


def test_a_sibling_stage_keeps_its_stage_beside_the_users_label() -> None:
    from specprobe.pipeline.checkpoint import run_label

    model = "allenai/OLMo-2-1124-7B"
    assert run_label("olmo2-7b", model, locate(model, "stage1-step1000-tokens5B").run) == "olmo2-7b"
    assert run_label("olmo2-7b", model, locate(model, "stage2-ingredient2-step1000-tokens5B").run) == (
        "olmo2-7b stage2-ingredient2"
    )
    repo = "google/multiberts-seed_3-step_20k"
    assert run_label(None, repo, locate(repo, "main").run) == "google/multiberts-seed_3"


@settings(max_examples=100, deadline=None)
@given(
    stage=st.integers(1, 4),
    ingredient=st.one_of(st.none(), st.integers(1, 9)),
    step=st.integers(0, 2_000_000),
    billions=st.integers(0, 9000),
)
def test_olmo2_stage_names_place_their_checkpoint(
    stage: int, ingredient: int | None, step: int, billions: int
) -> None:
    """Any OLMo-2 stage branch: the step as named, tokens from step × batch on stage 1 (never
    the rounded label), and a later stage a sibling run of its own with no tokens claimed."""
    branch = f"stage{stage}" + (f"-ingredient{ingredient}" if ingredient else "")
    where = locate("allenai/OLMo-2-1124-7B", f"{branch}-step{step}-tokens{billions}B")
    assert where.step == step and where.source is Source.REVISION
    if stage == 1:
        assert (where.run, where.tokens) == ("allenai/OLMo-2-1124-7B", step * 4_194_304)
    else:
        assert (where.run, where.tokens) == (f"allenai/OLMo-2-1124-7B {branch}", None)

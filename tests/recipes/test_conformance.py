"""The conformance suite: local hub caches under the real ids of the published families, with
their real revision lists and config.json files shaped as the published ones (the same keys,
architectures, tying and rotary fractions; tiny widths), and every bundled recipe that reads
the hub run end to end offline on them (the dataset pointed at a local file).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from specprobe.cli.app import app
from specprobe.models.hub import find_checkpoints, resolve_commit
from specprobe.models.positions import known, locate
from specprobe.recipes.recipe import bundled_recipes, load_recipe, pythia_schedule
from specprobe.store.results import ResultStore
from tests.hubcache import add_revision, corpus_lines, hub_repo, make_tokenizer

runner = CliRunner()

# ---- config.json as the families publish them (the published keys; tiny widths) -------------

TINY = {"hidden": 16, "heads": 2, "layers": 2, "ffn": 32, "positions": 64}


def pythia_config(vocab: int) -> dict[str, Any]:
    """EleutherAI/pythia-1.4b's config.json, shrunk: GPT-NeoX, a quarter of each head rotary
    (rotary_pct 0.25), parallel residual, untied output embedding."""
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "bos_token_id": 0,
        "eos_token_id": 0,
        "hidden_act": "gelu",
        "hidden_size": TINY["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": 4 * TINY["hidden"],
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": TINY["positions"],
        "model_type": "gpt_neox",
        "num_attention_heads": TINY["heads"],
        "num_hidden_layers": TINY["layers"],
        "rotary_emb_base": 10000,
        "rotary_pct": 0.25,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.24.0",
        "use_cache": True,
        "use_parallel_residual": True,
        "vocab_size": vocab,
    }


def gpt2_config(vocab: int, crfm: bool = False) -> dict[str, Any]:
    """openai-community/gpt2's config.json, shrunk (tied embeddings); the CRFM (Mistral)
    runs add their stability options (attention scaled by the inverse layer index,
    reordered and upcast attention)."""
    out = {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": 0,
        "embd_pdrop": 0.1,
        "eos_token_id": 0,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": TINY["positions"],
        "n_embd": TINY["hidden"],
        "n_head": TINY["heads"],
        "n_layer": TINY["layers"],
        "n_positions": TINY["positions"],
        "resid_pdrop": 0.1,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "vocab_size": vocab,
    }
    if crfm:
        out.update(
            {"scale_attn_by_inverse_layer_idx": True, "reorder_and_upcast_attn": True, "use_cache": False}
        )
    return out


def llama_config(vocab: int, *, tie: bool, kv_heads: int, rope_theta: float) -> dict[str, Any]:
    """A Llama config.json (TinyLlama: grouped-query attention, untied; SmolLM2: tied)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": TINY["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": TINY["ffn"],
        "max_position_embeddings": TINY["positions"],
        "model_type": "llama",
        "num_attention_heads": TINY["heads"],
        "num_hidden_layers": TINY["layers"],
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": rope_theta,
        "tie_word_embeddings": tie,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": vocab,
    }


def olmo2_config(vocab: int) -> dict[str, Any]:
    """allenai/OLMo-2-0425-1B's config.json, shrunk: Olmo2 (QK-norm, post-norm), untied (its
    special token ids, 100257 and 100277, moved into the tiny vocabulary)."""
    return {
        "architectures": ["Olmo2ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "eos_token_id": vocab - 2,
        "hidden_act": "silu",
        "hidden_size": TINY["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": TINY["ffn"],
        "max_position_embeddings": TINY["positions"],
        "model_type": "olmo2",
        "num_attention_heads": TINY["heads"],
        "num_hidden_layers": TINY["layers"],
        "num_key_value_heads": TINY["heads"],
        "pad_token_id": vocab - 1,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 500000,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": vocab,
    }


# ---- the published revision lists ------------------------------------------------------------


def olmo2_stage1(tokens_per_step: int, steps: Sequence[int]) -> list[str]:
    """OLMo-2 stage-1 branch names: the tokens in the label rounded up to the billion."""
    return [f"stage1-step{s}-tokens{math.ceil(s * tokens_per_step / 1e9)}B" for s in steps]


OLMO2_7B = [
    *olmo2_stage1(4_194_304, range(1000, 11000, 1000)),
    *(
        f"stage2-ingredient{k}-step{s}-tokens{math.ceil(s * 4_194_304 / 1e9)}B"
        for k in (1, 2, 3)
        for s in (1000, 2000)
    ),
]
AMBER = [f"ckpt_{i:03d}" for i in range(360)]
CRFM = [
    f"checkpoint-{s}"
    for s in (
        *range(10, 101, 10),
        *range(150, 2001, 50),
        *range(2100, 20001, 100),
        *range(21000, 400001, 1000),
    )
]


def _build(config: dict[str, Any], seed: int) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {
        k: v for k, v in config.items() if k not in ("model_type", "architectures", "transformers_version")
    }
    built = AutoConfig.for_model(config["model_type"], **fields)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(built, attn_implementation="eager").eval()


def publish(
    repo: str,
    revisions: Sequence[str],
    config: dict[str, Any],
    tokenizer: Any,
    weights: dict[str, int] | None = None,
) -> None:
    """``repo`` in the local hub cache with every one of ``revisions`` as a ref: those in
    ``weights`` (revision → seed) get weights of their own, the others share one snapshot.
    Every snapshot's config.json is the published shape, written as is."""
    weights = weights or {}
    shared = None
    for revision in revisions:
        if revision in weights or shared is None:
            commit = add_revision(repo, revision, _build(config, weights.get(revision, 0)), tokenizer)
            (hub_repo(repo) / "snapshots" / commit / "config.json").write_text(json.dumps(config))
            if revision not in weights:
                shared = commit
        else:
            (hub_repo(repo) / "refs" / revision).write_text(shared)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return make_tokenizer()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(corpus_lines(200)) + "\n")
    return path


# ---- every revision of a family resolves and has its position -------------------------------

FAMILIES: list[tuple[str, Callable[[int], dict[str, Any]], list[str]]] = [
    ("EleutherAI/pythia-1.4b", pythia_config, pythia_schedule()),
    ("EleutherAI/pythia-160m-seed3", pythia_config, pythia_schedule()),
    ("allenai/OLMo-2-1124-7B", olmo2_config, OLMO2_7B),
    ("LLM360/Amber", lambda v: llama_config(v, tie=False, kv_heads=2, rope_theta=10000.0), AMBER),
    ("stanford-crfm/alias-gpt2-small-x21", lambda v: gpt2_config(v, crfm=True), CRFM),
    (
        "HuggingFaceTB/SmolLM2-1.7B-intermediate-checkpoints",
        lambda v: llama_config(v, tie=True, kv_heads=2, rope_theta=130000.0),
        [f"step-{s}" for s in range(125000, 1000001, 125000)],
    ),
]


@pytest.mark.parametrize(
    ("repo", "config", "revisions"),
    # Pythia's 154 revisions resolve in about 10 s: slow; the other families stay in the default run.
    [
        pytest.param(*f, marks=[pytest.mark.slow] if f[0] == "EleutherAI/pythia-1.4b" else [])
        for f in FAMILIES
    ],
    ids=[f[0] for f in FAMILIES],
)
def test_every_published_revision_resolves_in_training_order(
    repo: str, config: Callable[[int], dict[str, Any]], revisions: list[str], tokenizer: Any
) -> None:
    """All of a family's published revisions (Pythia's 154) resolve offline from the cache,
    and their positions put them in training order: strictly increasing steps, tokens (or
    chunks), whatever order they are listed in."""
    publish(repo, revisions, config(len(tokenizer)), tokenizer)
    checkpoints = find_checkpoints(repo, list(reversed(revisions)))
    assert len(checkpoints) == len(revisions)
    commits = {resolve_commit(c.model, c.revision) for c in checkpoints}
    assert len(commits) == 1  # the shared snapshot, through every ref
    runs: dict[str, list[tuple[float, str]]] = {}
    for revision in revisions:
        where = locate(repo, revision)
        assert where.known, revision
        place = (
            where.tokens
            if where.tokens is not None
            else where.step
            if where.step is not None
            else where.chunk
        )
        runs.setdefault(where.run, []).append((float(place or 0), revision))
    for run, places in runs.items():
        values = [p for p, _ in places]
        assert values == sorted(values) and len(set(values)) == len(values), run
    if repo.startswith("allenai/OLMo-2"):
        assert sorted(runs) == [repo, *(f"{repo} stage2-ingredient{k}" for k in (1, 2, 3))]


def test_separate_repositories_resolve_as_one_run(tokenizer: Any) -> None:
    """TinyLlama and MultiBERTs publish one repository per checkpoint: each id resolves, and
    the registry places them on one run's axis."""
    ids = [
        "TinyLlama/TinyLlama-1.1B-intermediate-step-240k-503B",
        "TinyLlama/TinyLlama-1.1B-intermediate-step-480k-1007B",
        "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
    ]
    for i, repo in enumerate(ids):
        publish(
            repo,
            ["main"],
            llama_config(len(tokenizer), tie=False, kv_heads=1, rope_theta=10000.0),
            tokenizer,
            {"main": i},
        )
        resolve_commit(repo, "main")
    places = [locate(repo, "main") for repo in ids]
    assert {p.run for p in places} == {"TinyLlama/TinyLlama-1.1B"}
    assert [p.step for p in places] == [240_000, 480_000, 1_431_000]
    assert [p.tokens for p in places] == [s * 2_097_152 for s in (240_000, 480_000, 1_431_000)]
    multiberts = [locate(f"google/multiberts-seed_{s}-step_{k}k", "main") for s in (0, 1) for k in (20, 2000)]
    assert [(p.run, p.step, p.seed) for p in multiberts] == [
        ("google/multiberts-seed_0", 20_000, 0),
        ("google/multiberts-seed_0", 2_000_000, 0),
        ("google/multiberts-seed_1", 20_000, 1),
        ("google/multiberts-seed_1", 2_000_000, 1),
    ]


# ---- every bundled recipe that reads the hub, end to end -------------------------------------

# recipe → (--only, the revisions measured, config.json for its ids)
RECIPES: dict[str, tuple[list[str], list[str], Callable[[str, int], dict[str, Any]]]] = {
    "pythia": (
        ["pythia-14m", "pythia-1.4b", "pythia-6.9b"],
        ["step0", "step143000"],
        lambda _, v: pythia_config(v),
    ),
    "pythia-deduped": (
        ["pythia-1.4b-deduped", "pythia-2.8b-deduped"],
        ["step1000", "step143000"],
        lambda _, v: pythia_config(v),
    ),
    "polypythias": (
        ["pythia-14m-seed1", "pythia-14m-seed2", "pythia-70m-seed1", "pythia-70m-seed2"],
        ["step1", "step143000"],
        lambda _, v: pythia_config(v),
    ),
    "crfm-gpt2-small": (
        ["gpt2-small-x21", "gpt2-small-x49"],
        ["checkpoint-1000", "checkpoint-400000"],
        lambda _, v: gpt2_config(v, crfm=True),
    ),
    "gpt2": (["gpt2", "gpt2-medium"], ["main"], lambda _, v: gpt2_config(v)),
    "simplestories": (
        ["ss-1.25m", "ss-5m"],
        ["main"],
        lambda _, v: llama_config(v, tie=False, kv_heads=2, rope_theta=10000.0),
    ),
}


def test_the_conformance_suite_covers_every_hub_recipe() -> None:
    """Every bundled recipe of causal LMs runs here; vit-sizes (images) runs in
    tests/recipes/test_recipe_tasks.py::test_bundled_vit_sizes_runs_on_a_local_imagefolder,
    multiberts (masked LMs) in tests/cli/test_tasks.py::test_bundled_multiberts_runs_as_seeds_of_one_size."""
    assert set(bundled_recipes()) - {"tiny-local", "vit-sizes", "multiberts"} == set(RECIPES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_bundled_recipe_runs_end_to_end_offline(
    name: str, tokenizer: Any, corpus: Path, tmp_path: Path
) -> None:
    """The recipe's own models (by label), under their real ids, with every revision its
    generator picks published; a few measured, the dataset a local file."""
    only, measured, config = RECIPES[name]
    recipe = load_recipe(name)
    models = [m for m in recipe.models if (m.label or m.id) in only]
    assert len(models) == len(only)
    widths = {}
    for i, model in enumerate(models):
        revisions = list(recipe.model_revisions(model) or ["main"])
        assert set(measured) <= set(revisions) or measured == ["main"]
        published = (
            pythia_schedule()
            if model.id.startswith("EleutherAI/")
            else CRFM
            if "crfm" in model.id
            else ["main"]
        )
        assert set(revisions) <= set(published), (model.id, set(revisions) - set(published))
        shaped = config(model.id, len(tokenizer))
        # sizes grow with the recipe's order; seeds of one size share it
        entry = known(model.id)
        size = f"{entry.family.name} {entry.size}" if entry is not None else model.id
        width = widths.setdefault(size, 8 * (len(widths) + 1))
        shaped.update({"hidden_size": width} if "hidden_size" in shaped else {"n_embd": width})
        publish(model.id, published, shaped, tokenizer, {r: i * 10 + j for j, r in enumerate(measured)})
    out = tmp_path / "run"
    # The bundled recipe itself, its dataset pointed at a local file (a recipe that includes it).
    local = tmp_path / "local.yaml"
    local.write_text(f"version: 1\ninclude: {name}\ndata: {{dataset: {corpus}, text_column: text}}\n")
    result = runner.invoke(
        app,
        [
            "run",
            str(local),
            "--only",
            ",".join(only),
            "--revisions",
            ",".join(measured),
            "--num-sequences",
            "6",
            "--seq-len",
            "16",
            "--probes",
            "2",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    records = ResultStore(out).records()
    assert len(records) == len(only) * len(measured)
    assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    for r in records:
        assert r["loss_stderr"] and r["loss_stderr"] > 0
        where = locate(r["model"], r["revision"])
        assert (r["step"], r["tokens_seen"]) == (where.step, where.tokens)
    if name == "polypythias":
        assert "Across 4 runs of 2 sizes (seeds averaged per size" in result.output
    if name == "crfm-gpt2-small":
        assert "seed spread" in result.output and "Across 2 runs of 1 size" in result.output


# ---- the command line: typed order, runs across repositories, stated rules -------------------


def _analyze(args: list[str], corpus: Path, out: Path) -> Any:
    return runner.invoke(
        app,
        [
            "analyze",
            *args,
            "--dataset",
            str(corpus),
            "--num-sequences",
            "6",
            "--seq-len",
            "16",
            "--probes",
            "2",
            "--out",
            str(out),
            "--json",
        ],
    )


@pytest.mark.slow
def test_olmo2_revisions_typed_in_any_order_give_one_report(
    tokenizer: Any, corpus: Path, tmp_path: Path
) -> None:
    """OLMo-2 stage branches under the real ids, typed in two orders: the same records in
    training order, the same report (the verdict flipped with the order before issue 27)."""
    revisions = OLMO2_7B[:3]
    for repo, seed in (("allenai/OLMo-2-0425-1B", 0), ("allenai/OLMo-2-1124-7B", 10)):
        config = olmo2_config(len(tokenizer))
        config["hidden_size"] = 8 if seed == 0 else 16
        publish(repo, revisions, config, tokenizer, {r: seed + i for i, r in enumerate(revisions)})
    models = ["allenai/OLMo-2-1124-7B", "allenai/OLMo-2-0425-1B"]
    forward = _analyze([*models, "--revisions", ",".join(revisions)], corpus, tmp_path / "a")
    backward = _analyze([*models, "--revisions", ",".join(reversed(revisions))], corpus, tmp_path / "b")
    assert forward.exit_code == backward.exit_code == 0, forward.output + backward.output
    for out in ("a", "b"):
        records = ResultStore(tmp_path / out).records()
        assert {r["step"] for r in records} == {1000, 2000, 3000}
    report = [
        runner.invoke(app, ["report", str(tmp_path / out)], env={"COLUMNS": "200"}) for out in ("a", "b")
    ]
    assert report[0].exit_code == 0 and report[0].output.replace(str(tmp_path / "a"), "") == report[
        1
    ].output.replace(str(tmp_path / "b"), "")


@pytest.mark.slow
def test_separate_repositories_are_one_run_on_the_command_line(
    tokenizer: Any, corpus: Path, tmp_path: Path
) -> None:
    """TinyLlama's per-checkpoint repositories (known to the registry) and any repositories
    declared with --run are one run: one model table, in step order, never compared as sizes."""
    ids = [
        "TinyLlama/TinyLlama-1.1B-intermediate-step-480k-1007B",
        "TinyLlama/TinyLlama-1.1B-intermediate-step-240k-503B",
    ]
    for i, repo in enumerate(ids):
        publish(
            repo,
            ["main"],
            llama_config(len(tokenizer), tie=False, kv_heads=1, rope_theta=10000.0),
            tokenizer,
            {"main": i},
        )
    result = _analyze(ids, corpus, tmp_path / "tl")
    assert result.exit_code == 0, result.output
    records = ResultStore(tmp_path / "tl").records()
    assert {r["run"] for r in records} == {"TinyLlama/TinyLlama-1.1B"}
    assert {r["label"] for r in records} == {"TinyLlama/TinyLlama-1.1B"}
    text = runner.invoke(app, ["report", str(tmp_path / "tl")], env={"COLUMNS": "200"}).output
    assert "Across 2 models" not in text and "comparison across models" not in text
    assert text.index("TinyLlama-1.1B-intermediate-step-240k-503B") < text.index(
        "TinyLlama-1.1B-intermediate-step-480k-1007B"
    )
    # Any two repositories, declared one run with their positions stated.
    for i, repo in enumerate(("acme/run-early", "acme/run-late")):
        publish(
            repo,
            ["main"],
            llama_config(len(tokenizer), tie=True, kv_heads=2, rope_theta=10000.0),
            tokenizer,
            {"main": i},
        )
    declared = _analyze(
        [
            "acme/run-late",
            "acme/run-early",
            "--run",
            "acme/run",
            "--position",
            "acme/run-early=100,acme/run-late=200",
        ],
        corpus,
        tmp_path / "acme",
    )
    assert declared.exit_code == 0, declared.output
    records = ResultStore(tmp_path / "acme").records()
    assert {(r["model"], r["run"], r["step"], r["position_source"]) for r in records} == {
        ("acme/run-early", "acme/run", 100, "stated"),
        ("acme/run-late", "acme/run", 200, "stated"),
    }


def test_tokens_per_step_is_never_silently_ignored(tokenizer: Any, corpus: Path, tmp_path: Path) -> None:
    publish(
        "LLM360/Amber",
        ["ckpt_000100"],
        llama_config(len(tokenizer), tie=False, kv_heads=2, rope_theta=1e4),
        tokenizer,
    )
    result = _analyze(
        ["LLM360/Amber", "--revisions", "ckpt_000100", "--tokens-per-step", "4096"], corpus, tmp_path / "x"
    )
    assert result.exit_code == 2
    assert (
        "--tokens-per-step 4,096 needs each checkpoint's step, found a data chunk (100), not a step"
        in result.output
    )
    assert not (tmp_path / "x" / "results.jsonl").exists()

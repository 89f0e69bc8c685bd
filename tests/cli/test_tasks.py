"""`specprobe analyze` on local hub caches of every task, under real-looking ids with tiny
configs: each is measured under its own head and objective and records it; a masked LM is
never measured as a causal LM; a checkpoint whose task cannot be told apart gets exit 2
before anything is written."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import specprobe
from specprobe.choices import Task
from specprobe.cli.app import app
from specprobe.config import DataSpec
from specprobe.core.task_adapters import adapter_for
from specprobe.models.fingerprint import fingerprint_tokenizer
from specprobe.models.task_data import build_task_subset
from specprobe.models.tiny_tasks import tiny_task_config, tiny_task_model
from specprobe.store.results import ResultStore
from tests.hubcache import WORDS, add_revision, corpus_lines

runner = CliRunner()
MULTIBERTS = "google/multiberts-seed_0-step_20k"
T5 = "google/t5-efficient-tiny"
VIT = "google/vit-base-patch16-224"
SMALL = ["--num-sequences", "4", "--seq-len", "12", "--probes", "4", "--estimator", "exact"]


def word_tokenizer(specials: list[str], **roles: str) -> Any:
    """A word-level tokenizer over the test corpus's words, with ``specials`` first."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*specials, *WORDS, "."])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=roles.get("unk_token", specials[0])))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, **roles)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text("\n".join(corpus_lines(120)) + "\n")
    return path


@pytest.fixture(scope="session")
def bert_tokenizer() -> Any:
    return word_tokenizer(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


@pytest.fixture(scope="session")
def multiberts(bert_tokenizer: Any) -> Any:
    """MultiBERTs as published: a BertForPreTraining config (the masked LM with its
    next-sentence head), one repository per step."""
    model = tiny_task_model("bert", vocab_size=len(bert_tokenizer), seed=0)
    model.config.architectures = ["BertForPreTraining"]
    add_revision(MULTIBERTS, "main", model, bert_tokenizer)
    return model


def analyze(*args: str) -> Any:
    return runner.invoke(app, ["analyze", *args])


def test_multiberts_is_measured_as_a_masked_lm(
    multiberts: Any, bert_tokenizer: Any, corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = analyze(MULTIBERTS, "--dataset", str(corpus), *SMALL, "--out", str(out))
    assert result.exit_code == 0, result.output
    (record,) = ResultStore(out).records()
    assert record["task"] == "masked-lm" and record["settings"]["data"]["task"] == "masked-lm"
    assert record["settings"]["data"]["mask_rate"] == 0.15
    # The numbers are those of the masked-LM objective on the seeded masks of the subset.
    spec = DataSpec(dataset=str(corpus), num_sequences=4, seq_len=12)
    subset = build_task_subset(spec, Task.MASKED_LM, bert_tokenizer, fingerprint_tokenizer(bert_tokenizer))
    masked = int((subset.batch()["labels"] != -100).sum())
    assert record["num_outputs"] == masked * len(bert_tokenizer)
    assert record["dataset_fingerprint"] == subset.fingerprint
    direct = specprobe.measure(
        tiny_task_model("bert", vocab_size=len(bert_tokenizer), seed=0),
        subset.batch(),
        estimator="exact",
        adapter=adapter_for(Task.MASKED_LM),
    )
    assert record["chi_net"] == pytest.approx(direct.chi_net, rel=1e-5)
    assert record["loss"] == pytest.approx(direct.loss, rel=1e-5)


def test_a_masked_lm_is_never_measured_as_a_causal_lm(multiberts: Any, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = analyze(MULTIBERTS, "--task", "causal-lm", "--dataset", str(corpus), *SMALL, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert "trained as a masked-lm model, not causal-lm" in result.output
    assert not out.exists()


def test_a_checkpoint_of_unknown_task_is_refused_before_anything_is_written(
    bert_tokenizer: Any, corpus: Path, tmp_path: Path
) -> None:
    config = tiny_task_config("bert", vocab_size=len(bert_tokenizer))
    config.architectures = None  # BertConfig alone: a causal LM (BertLMHeadModel) or a masked LM
    add_revision("org/bert-headless", "main", None, bert_tokenizer, config_only=config)
    out = tmp_path / "run"
    result = analyze("org/bert-headless", "--dataset", str(corpus), *SMALL, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert "cannot tell which task" in result.output
    assert "causal-lm, masked-lm, seq2seq-lm, image-classification" in result.output
    assert not out.exists()


@pytest.fixture(scope="session")
def t5_tokenizer() -> Any:
    sentinels = [f"<extra_id_{i}>" for i in range(8)]
    return word_tokenizer(
        ["<pad>", "</s>", "<unk>", *sentinels],
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=sentinels,
    )


def test_t5_is_measured_on_span_corruption_and_on_pairs(
    t5_tokenizer: Any, corpus: Path, tmp_path: Path
) -> None:
    model = tiny_task_model("t5", vocab_size=len(t5_tokenizer), seed=0)
    add_revision(T5, "main", model, t5_tokenizer)
    out = tmp_path / "spans"
    result = analyze(T5, "--dataset", str(corpus), *SMALL, "--out", str(out))
    assert result.exit_code == 0, result.output
    (record,) = ResultStore(out).records()
    assert record["task"] == "seq2seq-lm"
    # 12 tokens: 2 noise tokens in 1 span; the target is sentinel, 2 tokens, EOS.
    assert record["num_outputs"] == 4 * 4 * len(t5_tokenizer)
    pairs = tmp_path / "pairs.jsonl"
    lines = corpus_lines(12)
    pairs.write_text(
        "\n".join(json.dumps({"source": a, "target": b}) for a, b in itertools.pairwise(lines)) + "\n"
    )
    out = tmp_path / "pairs"
    result = analyze(
        T5,
        "--dataset",
        str(pairs),
        "--text-column",
        "source",
        "--target-column",
        "target",
        *SMALL,
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    (record,) = ResultStore(out).records()
    assert record["settings"]["data"]["target_column"] == "target"
    spec = DataSpec(
        dataset=str(pairs), text_column="source", target_column="target", num_sequences=4, seq_len=12
    )
    subset = build_task_subset(spec, Task.SEQ2SEQ_LM, t5_tokenizer, fingerprint_tokenizer(t5_tokenizer))
    labels = subset.batch()["labels"]
    assert record["num_outputs"] == int((labels != -100).sum()) * len(t5_tokenizer)


def test_vit_is_measured_per_image(tmp_path: Path) -> None:
    from PIL import Image
    from transformers import ViTImageProcessor

    model = tiny_task_model("vit", num_labels=2, seed=0)
    processor = ViTImageProcessor(size={"height": 8, "width": 8})
    add_revision(VIT, "main", model, processor)
    images = tmp_path / "images"
    g = torch.Generator().manual_seed(0)
    for label in ("cat", "dog"):
        (images / label).mkdir(parents=True)
        for i in range(3):
            pixels = (torch.rand(10, 10, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(images / label / f"{i}.png")
    out = tmp_path / "run"
    result = analyze(
        VIT,
        "--dataset",
        str(images),
        "--num-sequences",
        "4",
        "--probes",
        "4",
        "--estimator",
        "exact",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    (record,) = ResultStore(out).records()
    assert record["task"] == "image-classification"
    assert record["num_outputs"] == 4 * 2  # one row of 2 class logits per image
    assert record["num_tokens"] == 4
    # Labelled by the task: the statistic per image, no tokens, no (S−1)·V.
    assert "B_noise tokens" not in result.output and "(S−1)·V" not in result.output
    assert "classes·χ_pos^∞ for an image classifier" in result.output


def test_eigen_and_groups_of_a_masked_lm(
    multiberts: Any, bert_tokenizer: Any, corpus: Path, tmp_path: Path
) -> None:
    # --eigen on the masked-LM eNTK (its outputs: the masked positions), --groups by layer.
    out = tmp_path / "run"
    result = analyze(
        MULTIBERTS,
        "--dataset",
        str(corpus),
        "--num-sequences",
        "3",
        "--seq-len",
        "10",
        "--probes",
        "4",
        "--eigen",
        "3",
        "--exact",
        "--groups",
        "auto",
        "--dtype",
        "float64",
        "--out",
        str(out),
        "--html",
        str(tmp_path / "report.html"),
    )
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text()
    assert "masked positions per sequence × V" in html and "(S−1)·V" not in html
    (record,) = ResultStore(out).records()
    spec = DataSpec(dataset=str(corpus), num_sequences=3, seq_len=10)
    subset = build_task_subset(spec, Task.MASKED_LM, bert_tokenizer, fingerprint_tokenizer(bert_tokenizer))
    model = tiny_task_model("bert", vocab_size=len(bert_tokenizer), seed=0, dtype=torch.float64)
    dense = specprobe.dense_kernel(model, subset.batch(), adapter=adapter_for(Task.MASKED_LM))
    assert record["spectrum"]["top_eigenvalues"] == pytest.approx(dense.eigenvalues[:3].tolist(), rel=1e-8)
    shares = sum(g["chi_net_share"] for g in record["groups"])
    assert shares == pytest.approx(1.0, rel=1e-9)


def test_library_probe_records_the_task(tmp_path: Path) -> None:
    from specprobe.core.masking import mask_tokens

    ids = torch.randint(5, 32, (3, 8), generator=torch.Generator().manual_seed(0))
    inputs, labels = mask_tokens(
        ids, torch.ones_like(ids, dtype=torch.bool), mask_token_id=4, vocab_size=32, seed=0
    )
    probe = specprobe.Probe(
        {"input_ids": inputs, "labels": labels}, adapter="masked_lm", probes=4, out=tmp_path / "run"
    )
    probe.measure(tiny_task_model("bert"), step=0)
    (record,) = ResultStore(tmp_path / "run").records()
    assert record["task"] == "masked-lm"
    assert record["num_outputs"] == int((labels != -100).sum()) * 32


@pytest.mark.slow
def test_bundled_multiberts_runs_as_seeds_of_one_size(
    bert_tokenizer: Any, corpus: Path, tmp_path: Path
) -> None:
    """The bundled MultiBERTs recipe under its real ids, offline: each seed's repositories
    (one per step) are one run, measured as a masked LM; the seeds are one size."""
    steps = ("20k", "2000k")
    ids = [f"google/multiberts-seed_{s}-step_{k}" for s in (0, 1) for k in steps]
    for i, repo in enumerate(ids):
        model = tiny_task_model("bert", vocab_size=len(bert_tokenizer), seed=10 + i)
        model.config.architectures = ["BertForPreTraining"]
        add_revision(repo, "main", model, bert_tokenizer)
    local = tmp_path / "local.yaml"
    local.write_text(f"version: 1\ninclude: multiberts\ndata: {{dataset: {corpus}, config: null}}\n")
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            *("run", str(local), "--only", ",".join(ids), "--num-sequences", "4", "--seq-len", "12"),
            *("--probes", "2", "--device", "cpu", "--out", str(out)),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    records = ResultStore(out).records()
    assert sorted(r["model"] for r in records) == sorted(ids)
    assert {r["task"] for r in records} == {"masked-lm"} and {r["status"] for r in records} == {"ok"}
    assert {r["model"]: r["step"] for r in records} == {
        repo: 20_000 if repo.endswith("20k") else 2_000_000 for repo in ids
    }
    assert {r["label"] for r in records} == {"google/multiberts-seed_0", "google/multiberts-seed_1"}
    assert "Across 2 runs of 1 size" in result.output

"""Recipes with a task: ``data.task`` and the task's own settings, checked like every key;
the task in the settings hash (a causal LM's hash unchanged); the bundled ViT-sizes recipe
run offline on tiny models under its real ids and a local imagefolder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from specprobe.choices import Task
from specprobe.cli.app import app
from specprobe.config import DataSpec, Settings
from specprobe.recipes.recipe import RecipeError, load_recipe
from specprobe.store.results import ResultStore
from tests.hubcache import add_revision
from tests.test_config import DEFAULT_CLI_HASH

BASE = """\
version: 1
family: {{name: bert, description: a masked LM}}
models: [{{id: google/multiberts-seed_0-step_20k}}]
data: {{{data}}}
"""


def recipe(tmp_path: Path, data: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(BASE.format(data=data))
    return path


def test_recipe_task_and_its_settings(tmp_path: Path) -> None:
    loaded = load_recipe(str(recipe(tmp_path, "task: masked-lm, mask_rate: 0.2, mask_split: [0.8, 0.2, 0]")))
    assert loaded.data.task is Task.MASKED_LM
    assert loaded.data.mask_rate == 0.2 and loaded.data.mask_split == (0.8, 0.2, 0.0)
    assert loaded.settings.to_dict()["data"]["task"] == "masked-lm"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("task: masked", "data.task: unknown value 'masked'; did you mean 'masked-lm'"),
        ("task: masked-lm, mask_rate: 0", "data.mask_rate: expected a fraction of positions in (0, 1]"),
        ("task: masked-lm, mask_split: [0.8, 0.1]", "data.mask_split: expected a list of three numbers"),
        ("task: masked-lm, mask_split: [0.8, 0.1, 0.2]", "data.mask_split: expected three fractions"),
    ],
)
def test_bad_task_settings_name_file_and_key(tmp_path: Path, data: str, message: str) -> None:
    with pytest.raises(
        RecipeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        load_recipe(str(recipe(tmp_path, data)))


def test_the_task_enters_the_settings_hash() -> None:
    # auto and causal-lm hash as before tasks (runs still resume); the other tasks differ,
    # and so do their own settings; another task's settings do not change a causal LM's.
    assert Settings(DataSpec(task=Task.AUTO)).hash() == Settings(DataSpec(task=Task.CAUSAL_LM)).hash()
    assert Settings(DataSpec(task=Task.CAUSAL_LM, mask_rate=0.3)).hash() == DEFAULT_CLI_HASH
    hashes = {Settings(DataSpec(task=t)).hash() for t in Task if t is not Task.AUTO}
    assert len(hashes) == 4
    masked = Settings(DataSpec(task=Task.MASKED_LM)).hash()
    assert Settings(DataSpec(task=Task.MASKED_LM, mask_rate=0.3)).hash() != masked
    assert Settings(DataSpec(task=Task.MASKED_LM, image_column="img")).hash() == masked
    pairs = Settings(DataSpec(task=Task.SEQ2SEQ_LM, target_column="target"))
    assert pairs.to_dict()["data"]["target_column"] == "target" and "mask_rate" not in pairs.to_dict()["data"]


def test_bundled_vit_sizes_runs_on_a_local_imagefolder(tmp_path: Path) -> None:
    from PIL import Image
    from transformers import ViTImageProcessor

    from specprobe.models.tiny_tasks import tiny_task_model

    model = tiny_task_model("vit", num_labels=3, seed=0)
    add_revision(
        "facebook/deit-tiny-patch16-224", "main", model, ViTImageProcessor(size={"height": 8, "width": 8})
    )
    images = tmp_path / "val"
    g = torch.Generator().manual_seed(0)
    for synset in ("n01440764", "n01443537", "n01484850"):
        (images / synset).mkdir(parents=True)
        for i in range(3):
            pixels = (torch.rand(12, 12, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(images / synset / f"{i}.JPEG")
    out = tmp_path / "run"
    args = ["run", "vit-sizes", "--only", "deit-tiny", "--set", f"images={images}", "--num-sequences", "6"]
    result = CliRunner().invoke(app, [*args, "--probes", "4", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (record,) = ResultStore(out).records()
    assert record["task"] == "image-classification" and record["label"] == "deit-tiny"
    assert record["num_outputs"] == 6 * 3

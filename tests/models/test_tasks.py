"""Which task a checkpoint is measured under, from its config as published: a masked LM is
never measured as a causal LM, and what cannot be told apart is refused with the choices."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specprobe.choices import Task
from specprobe.errors import SpecprobeError
from specprobe.models.tasks import resolve_task


def config(kind: str, **values: Any) -> Any:
    from transformers import (
        BartConfig,
        BertConfig,
        ElectraConfig,
        GPTNeoXConfig,
        T5Config,
        ViTConfig,
    )

    made = {
        "bert": BertConfig,
        "t5": T5Config,
        "vit": ViTConfig,
        "neox": GPTNeoXConfig,
        "bart": BartConfig,
        "electra": ElectraConfig,
    }[kind]()
    for key, value in values.items():
        setattr(made, key, value)
    return made


CASES = [
    # MultiBERTs publishes BertForPreTraining; BERT base BertForMaskedLM: both masked LMs.
    ("bert", {"architectures": ["BertForPreTraining"]}, "auto", Task.MASKED_LM),
    ("bert", {"architectures": ["BertForMaskedLM"]}, "auto", Task.MASKED_LM),
    ("bert", {"architectures": ["BertForMaskedLM"]}, "masked-lm", Task.MASKED_LM),
    ("bert", {"architectures": ["BertLMHeadModel"], "is_decoder": True}, "auto", Task.CAUSAL_LM),
    ("bert", {"is_decoder": True}, "auto", Task.CAUSAL_LM),
    ("t5", {"architectures": ["T5ForConditionalGeneration"]}, "auto", Task.SEQ2SEQ_LM),
    ("t5", {}, "auto", Task.SEQ2SEQ_LM),
    ("bart", {"architectures": ["BartForConditionalGeneration"]}, "auto", Task.SEQ2SEQ_LM),
    ("bart", {}, "auto", Task.SEQ2SEQ_LM),
    ("vit", {"architectures": ["ViTForImageClassification"]}, "auto", Task.IMAGE_CLASSIFICATION),
    ("vit", {}, "auto", Task.IMAGE_CLASSIFICATION),
    ("neox", {"architectures": ["GPTNeoXForCausalLM"]}, "auto", Task.CAUSAL_LM),
    ("neox", {}, "auto", Task.CAUSAL_LM),
    ("neox", {}, "causal-lm", Task.CAUSAL_LM),
    # refused: the safety case, what cannot be told apart, what has no head
    ("bert", {"architectures": ["BertForPreTraining"]}, "causal-lm", "trained as a masked-lm model"),
    ("bert", {}, "auto", "cannot tell which task"),
    (
        "electra",
        {"architectures": ["ElectraForPreTraining"]},
        "auto",
        "a head of a task specprobe does not measure",
    ),
    ("bert", {"architectures": ["BertForMaskedLM", "BertLMHeadModel"]}, "auto", "heads of several tasks"),
    ("vit", {}, "causal-lm", "no causal-lm head"),
    ("neox", {}, "image-classification", "no image-classification head"),
]


@pytest.mark.parametrize(("kind", "values", "requested", "expected"), CASES)
def test_task_from_the_config(kind: str, values: dict[str, Any], requested: str, expected: Any) -> None:
    made = config(kind, **values)
    if isinstance(expected, Task):
        assert resolve_task(made, requested, "org/model") is expected
        return
    with pytest.raises(SpecprobeError, match=expected) as err:
        resolve_task(made, requested, "org/model")
    assert "\n" not in err.value.message
    choices = "causal-lm, masked-lm, seq2seq-lm, image-classification"
    assert choices in err.value.hint or "--task" in err.value.hint or choices in err.value.message


def _heads() -> list[tuple[str, str]]:
    """(model type, head class) for every head transformers maps to a task specprobe measures."""
    from transformers.models.auto import modeling_auto

    pairs = set()
    for mapping in (
        "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
        "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
        "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
        "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
        "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",  # a head of no measured task
        "MODEL_FOR_PRETRAINING_MAPPING_NAMES",
    ):
        for model_type, names in getattr(modeling_auto, mapping).items():
            for name in names if isinstance(names, list | tuple) else [names]:
                pairs.add((model_type, name))
    return sorted(pairs)


@settings(max_examples=60, deadline=None)
@given(head=st.sampled_from(_heads()), flags=st.sampled_from([{}, {"is_decoder": True}]))
def test_a_checkpoint_is_only_ever_measured_under_a_head_it_names(
    head: tuple[str, str], flags: dict[str, bool]
) -> None:
    # The invariant behind the MultiBERTs case, over every head transformers knows: the task
    # chosen for a config naming head C is one whose mapping holds C (or, for a pretraining
    # head, BERT-style MLM); otherwise the checkpoint is refused, never measured elsewhere.
    from transformers import CONFIG_MAPPING

    from specprobe.models.tasks import MLM_PRETRAINING, head_tasks

    model_type, name = head
    try:
        made = CONFIG_MAPPING[model_type]()
    except Exception:  # composite configs need their parts; nothing to check for them
        return
    made.architectures = [name]
    for key, value in flags.items():
        setattr(made, key, value)
    try:
        task = resolve_task(made, "auto", "org/model")
    except SpecprobeError as err:
        assert "causal-lm, masked-lm, seq2seq-lm, image-classification" in err.hint + err.message
        return
    allowed = head_tasks(name)
    if name.endswith("ForPreTraining") and model_type in MLM_PRETRAINING:
        allowed |= {Task.MASKED_LM}
    assert task in allowed, (model_type, name, task)

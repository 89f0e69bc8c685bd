"""Which task a checkpoint is measured under, from its config as published: a masked LM is
never measured as a causal LM, and what cannot be told apart is refused with the choices."""

from __future__ import annotations

from typing import Any

import pytest

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
    ("electra", {"architectures": ["ElectraForPreTraining"]}, "auto", "cannot tell which task"),
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

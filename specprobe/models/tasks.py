"""Which task a checkpoint was trained for, read from its config, and the class that loads it.

A model is measured under the head it was trained with (DESIGN section 7): transformers'
causal-LM mapping accepts ``BertConfig`` (as ``BertLMHeadModel``), so a MultiBERTs
checkpoint (``architectures: ["BertForPreTraining"]``) loaded through
``AutoModelForCausalLM`` would be measured as next-token prediction with a head it never
had. :func:`resolve_task` reads ``architectures``, ``is_decoder``, ``is_encoder_decoder``
and the config class, and refuses what it cannot tell apart, naming the choices.
"""

from __future__ import annotations

from typing import Any

from specprobe.choices import Task
from specprobe.errors import SpecprobeError

CHOICES = ", ".join(t.value for t in Task if t is not Task.AUTO)

AUTO_CLASSES = {
    Task.CAUSAL_LM: "AutoModelForCausalLM",
    Task.MASKED_LM: "AutoModelForMaskedLM",
    Task.SEQ2SEQ_LM: "AutoModelForSeq2SeqLM",
    Task.IMAGE_CLASSIFICATION: "AutoModelForImageClassification",
}
"""The transformers class that loads a checkpoint of each task (the one table)."""

_MAPPINGS = {
    Task.CAUSAL_LM: "MODEL_FOR_CAUSAL_LM_MAPPING",
    Task.MASKED_LM: "MODEL_FOR_MASKED_LM_MAPPING",
    Task.SEQ2SEQ_LM: "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING",
    Task.IMAGE_CLASSIFICATION: "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING",
}

MLM_PRETRAINING = frozenset({"bert", "albert", "megatron-bert", "mobilebert"})
"""Model types whose ``*ForPreTraining`` head is a masked-LM head (plus a sentence head
that loading as a masked LM drops): BERT's MLM + NSP, ALBERT's MLM + SOP. Other
``*ForPreTraining`` heads (ELECTRA's replaced-token discriminator, ...) are not masked LMs."""


def head_tasks(name: str) -> set[Task]:
    """The tasks whose transformers mapping holds the model class ``name`` (a class such as
    ``XLMWithLMHeadModel`` or ``BartForConditionalGeneration`` is in several)."""
    from transformers.models.auto import modeling_auto

    found = set()
    for task, mapping in _MAPPINGS.items():
        names = getattr(modeling_auto, mapping + "_NAMES")
        for value in names.values():
            if name == value or (isinstance(value, list | tuple) and name in value):
                found.add(task)
                break
    return found


def architecture_task(name: str, config: Any) -> Task | None:
    """The task a class named in ``config.architectures`` was trained for, or None when the
    name does not say: a class transformers maps to exactly one task is that task's; a
    class of several tasks (``BartForConditionalGeneration``: seq2seq, masked LM) is left
    to the config's flags; a class of none (remote code, ``BertForPreTraining``) is read
    from its name's suffix."""
    tasks = head_tasks(name)
    if len(tasks) == 1:
        return next(iter(tasks))
    if tasks:
        return None
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return Task.CAUSAL_LM
    if name.endswith("ForMaskedLM"):
        return Task.MASKED_LM
    if name.endswith("ForPreTraining") and getattr(config, "model_type", None) in MLM_PRETRAINING:
        return Task.MASKED_LM
    if name.endswith("ForConditionalGeneration") and getattr(config, "is_encoder_decoder", False):
        return Task.SEQ2SEQ_LM
    if name.endswith(("ForImageClassification", "ForImageClassificationWithTeacher")):
        return Task.IMAGE_CLASSIFICATION
    return None


def loadable(config: Any, task: Task, trust_remote_code: bool = False) -> bool:
    """Whether transformers (or the checkpoint's own code, when trusted) has a ``task`` head
    for this config."""
    import transformers

    mapping = getattr(transformers, _MAPPINGS[task])
    auto_map = getattr(config, "auto_map", None)
    remote = isinstance(auto_map, dict) and bool(auto_map.get(AUTO_CLASSES[task])) and trust_remote_code
    return type(config) in mapping or remote


def resolve_task(config: Any, requested: Task | str, name: str, trust_remote_code: bool = False) -> Task:
    """The task to measure the checkpoint ``name`` of ``config`` under.

    ``auto``: the task its ``architectures`` names; without one, ``is_encoder_decoder``
    (seq2seq), ``is_decoder`` (causal LM), or the one task transformers has a head for.
    An explicit task must agree with ``architectures`` where that names one, and have a head.
    Raises SpecprobeError (exit 2, before any weights load) when the task cannot be told
    apart, contradicts the checkpoint, or has no head for it; the message names the choices.
    """
    requested = Task(requested)
    names = [a for a in getattr(config, "architectures", None) or [] if isinstance(a, str)]
    named = {t for t in (architecture_task(a, config) for a in names) if t is not None}
    what = f"{name} ({type(config).__name__}, architectures {names or None})"
    if len(named) > 1:
        raise SpecprobeError(
            f"{what} names heads of several tasks ({', '.join(sorted(t.value for t in named))})",
            f"pass --task with the one it was trained for: {CHOICES}",
        )
    trained = next(iter(named), None)
    task: Task
    if requested is not Task.AUTO:
        if trained is not None and trained is not requested:
            raise SpecprobeError(
                f"{what} was trained as a {trained.value} model, not {requested.value}: measuring it under "
                "another head would measure a head it never had",
                f"pass --task {trained.value} (or --task auto)",
            )
        task = requested
    elif trained is not None:
        task = trained
    elif other := [
        a for a in names if "For" in a and architecture_task(a, config) is None and not head_tasks(a)
    ]:
        # A head of another task (AlbertForSequenceClassification): loading the task its
        # config also allows would measure a head the checkpoint does not have.
        raise SpecprobeError(
            f"{what} names a head of a task specprobe does not measure ({', '.join(other)})",
            f"pass --task with the one it was trained for, if it is one of: {CHOICES}",
        )
    else:
        # Names of several tasks' heads (BartForConditionalGeneration) narrow the choice.
        allowed = set.union(*(head_tasks(a) for a in names)) if names else set()
        task = _from_flags(config, what, trust_remote_code, allowed or set(AUTO_CLASSES))
    if not loadable(config, task, trust_remote_code):
        raise SpecprobeError(
            f"{what} has no {task.value} head that transformers knows ({AUTO_CLASSES[task]})",
            f"specprobe analyze measures {CHOICES} models; use specprobe.measure with an adapter for others",
        )
    return task


def _from_flags(config: Any, what: str, trust_remote_code: bool, allowed: set[Task]) -> Task:
    """The task of a config whose ``architectures`` does not say: its flags, or the one
    task that has a head for it, among ``allowed`` (the tasks its named heads belong to)."""
    if (
        getattr(config, "is_encoder_decoder", False)
        and Task.SEQ2SEQ_LM in allowed
        and loadable(config, Task.SEQ2SEQ_LM, trust_remote_code)
    ):
        return Task.SEQ2SEQ_LM
    if (
        getattr(config, "is_decoder", False)
        and Task.CAUSAL_LM in allowed
        and loadable(config, Task.CAUSAL_LM, trust_remote_code)
    ):
        return Task.CAUSAL_LM
    heads = [t for t in AUTO_CLASSES if t in allowed and loadable(config, t, trust_remote_code)]
    if len(heads) == 1:
        return heads[0]
    found = f"heads for {', '.join(t.value for t in heads)}" if heads else "no head specprobe measures"
    raise SpecprobeError(
        f"cannot tell which task {what} was trained for: its config names no head and transformers has {found}",
        f"pass --task with one of: {CHOICES}",
    )

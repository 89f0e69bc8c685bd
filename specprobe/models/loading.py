"""Loading a checkpoint: its model and tokenizer, and the checks before and after.

Models are loaded with eager attention: forward-mode AD and vmap do not run through the
fused scaled-dot-product attention kernels (the CPU flash kernel included), and the eNTK
operators need both. transformers is imported inside the functions, so that importing
this module (and ``specprobe --help``) stays cheap.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from specprobe.choices import Device, DType, Task
from specprobe.errors import SpecprobeError
from specprobe.models.hub import Checkpoint, cache_only, resolve_revision
from specprobe.models.tasks import AUTO_CLASSES, resolve_task


class IncompleteCheckpointError(SpecprobeError):
    """A checkpoint lacks weights its model needs (a base model saved without its output
    head): loading it would initialise them at random and measure noise."""


def remote_code_error(checkpoint: Checkpoint, commit: str | None) -> SpecprobeError:
    """The refusal for a checkpoint whose loading needs its own Python code, naming the files."""
    source = checkpoint.path if checkpoint.path is not None else checkpoint.model
    files: list[str] = []
    for name in ("config.json", "tokenizer_config.json"):
        auto_map = _read_json(checkpoint, commit, name).get("auto_map")
        refs = (
            auto_map.values()
            if isinstance(auto_map, dict)
            else auto_map
            if isinstance(auto_map, list)
            else []
        )
        for ref in refs:
            for item in ref if isinstance(ref, list) else [ref]:
                if isinstance(item, str) and "." in item:
                    module = item.split("--")[-1].rsplit(".", 1)[0].replace(".", "/") + ".py"
                    if module not in files:
                        files.append(module)
    where = f"{source}/" if checkpoint.path is not None else f"{checkpoint.name}: "
    named = ", ".join(f"{where}{f}" for f in files) if files else f"Python files in {source}"
    return SpecprobeError(
        f"{checkpoint.model} needs its own Python code to load ({named}), and specprobe runs "
        "a model's code only when asked on the command line",
        "read that code; if you trust it, rerun with --trust-remote-code",
    )


def _read_json(checkpoint: Checkpoint, commit: str | None, name: str) -> dict[str, Any]:
    """A small JSON file of the checkpoint (local, or from the hub cache), {} if absent or bad."""
    try:
        if checkpoint.path is not None:
            path = checkpoint.path / name
        else:
            from huggingface_hub import hf_hub_download

            path = Path(
                hf_hub_download(
                    checkpoint.model,
                    name,
                    revision=commit or checkpoint.revision,
                    local_files_only=cache_only(),
                )
            )
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except Exception:  # absent, unreachable or not JSON: nothing to name
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _needs_remote_code(err: BaseException) -> bool:
    return "trust_remote_code" in str(err)


@dataclass
class LoadedCheckpoint:
    """A loaded model with what the results record about it."""

    checkpoint: Checkpoint
    model: nn.Module
    tokenizer: Any
    """The tokenizer; for an image classifier, its image processor."""
    commit: str | None
    """The hub commit the revision resolved to (None for local directories)."""
    num_params: int
    max_positions: int | None
    """The model's context length, when its config states one."""
    input_device: torch.device
    load_time_s: float
    task: Task = Task.CAUSAL_LM
    """The task the model was loaded for (its head)."""


def load_checkpoint(
    checkpoint: Checkpoint,
    *,
    device: Device | str = Device.cpu,
    dtype: DType | str = DType.float32,
    trust_remote_code: bool = False,
    gpus: Sequence[int] | None = None,
    task: Task | str = Task.AUTO,
) -> LoadedCheckpoint:
    """Load a model with the head of its ``task`` and its tokenizer (an image classifier:
    its image processor) with eager attention, in eval mode.

    ``task`` ``auto`` reads it from the checkpoint's config
    (:func:`specprobe.models.tasks.resolve_task`); an explicit task must agree with the
    head the config names: a masked-LM checkpoint is never loaded as a causal LM.

    Hub revisions are resolved to their commit first, and the model is loaded at that
    commit, so the record names exactly the weights measured. ``device="auto"`` uses
    Accelerate's ``device_map="auto"`` across GPUs; offloading to CPU or disk is refused
    (torch.func's functional calls do not work through offload hooks). ``gpus`` limits the
    GPUs used (a process of a multi-process sweep): ``cuda`` loads onto the first of them,
    ``auto`` spreads the model over them.
    """
    start = time.perf_counter()
    device, dtype = _usable_device(Device(device)), DType(dtype)
    commit = None  # the revision loaded: the hub commit, None for a local folder
    local = False  # the hub is unreachable (now or earlier): read the cache without retrying it
    if checkpoint.path is None:
        commit, unreachable = resolve_revision(checkpoint.model, checkpoint.revision)
        local = unreachable or cache_only()
    task = Task(task)
    if task is Task.AUTO:
        config = read_config(checkpoint, commit, trust_remote_code, local)
        task = resolve_task(config, task, checkpoint.model, trust_remote_code)
    model = _load_model(checkpoint, commit, device, dtype, trust_remote_code, gpus, local, task)
    if task is Task.IMAGE_CLASSIFICATION:
        tokenizer = load_image_processor(checkpoint, commit, trust_remote_code, local_files_only=local)
    else:
        tokenizer = load_tokenizer(checkpoint, commit, trust_remote_code, local_files_only=local)
    first = next(model.parameters())
    return LoadedCheckpoint(
        checkpoint=checkpoint,
        model=model,
        tokenizer=tokenizer,
        commit=commit,
        num_params=sum(p.numel() for p in model.parameters()),
        max_positions=context_length(model.config),
        input_device=cast(torch.device, first.device),
        load_time_s=time.perf_counter() - start,
        task=task,
    )


def _usable_device(device: Device) -> Device:
    """``device``, or ``cpu`` for ``auto`` without CUDA; SpecprobeError for ``cuda`` without it."""
    if device is not Device.cpu and not torch.cuda.is_available():
        if device is Device.cuda:
            raise SpecprobeError("expected a CUDA device (--device cuda), found none", "use --device cpu")
        return Device.cpu
    return device


def _placement(device: Device, gpus: Sequence[int] | None) -> tuple[Any, dict[Any, Any] | None]:
    """``from_pretrained``'s ``device_map`` and ``max_memory`` for ``device`` on ``gpus``."""
    if device is Device.cuda:
        return {"": gpus[0] if gpus else 0}, None
    if device is not Device.auto:
        return None, None
    if not gpus:
        return "auto", None
    from accelerate.utils import get_max_memory

    return "auto", {gpu: size for gpu, size in get_max_memory().items() if gpu in set(gpus)}


def _load_model(
    checkpoint: Checkpoint,
    commit: str | None,
    device: Device,
    dtype: DType,
    trust_remote_code: bool,
    gpus: Sequence[int] | None,
    cache_only: bool,
    task: Task = Task.CAUSAL_LM,
) -> Any:
    """The checkpoint's model with its ``task`` head at ``commit``, checked complete and not
    offloaded, in eval mode."""
    import transformers

    source: str | Path = checkpoint.path if checkpoint.path is not None else checkpoint.model
    device_map, max_memory = _placement(device, gpus)
    transformers.utils.logging.disable_progress_bar()
    try:
        loaded: Any = getattr(transformers, AUTO_CLASSES[task]).from_pretrained(
            source,
            revision=commit,
            dtype=dtype.torch,
            attn_implementation="eager",
            device_map=device_map,
            max_memory=max_memory,
            trust_remote_code=trust_remote_code,
            local_files_only=cache_only,
            output_loading_info=True,
        )
    except (ValueError, OSError) as err:
        raise _load_error(checkpoint, commit, err, trust_remote_code, task) from None
    model, loading = cast(tuple[Any, dict[str, Any]], loaded)
    check_loading_info(checkpoint, type(model).__name__, loading, task)
    placement = set(getattr(model, "hf_device_map", {}).values())
    if placement & {"cpu", "disk"} and device is not Device.cpu:
        raise SpecprobeError(
            f"{checkpoint.model} does not fit on the GPUs: Accelerate offloaded part of it to "
            f"{' and '.join(sorted(str(p) for p in placement & {'cpu', 'disk'}))}",
            "offloading does not work with functional autodiff; use more or larger GPUs, "
            "--dtype bfloat16, or --device cpu",
        )
    return model.eval()


def _load_error(
    checkpoint: Checkpoint,
    commit: str | None,
    err: ValueError | OSError,
    trust_remote_code: bool,
    task: Task = Task.CAUSAL_LM,
) -> SpecprobeError:
    """The one-line error for a failed ``from_pretrained``."""
    if not isinstance(err, ValueError):  # an OSError: files missing or unreadable
        return SpecprobeError(
            f"could not load {checkpoint.model} at {checkpoint.revision}: {str(err).splitlines()[0]}",
            "check that the folder holds a complete save_pretrained checkpoint",
        )
    if _needs_remote_code(err) and not trust_remote_code:
        return remote_code_error(checkpoint, commit)
    if "Unrecognized configuration class" in str(err) or AUTO_CLASSES[task] in str(err):
        return SpecprobeError(
            f"{checkpoint.model} has no {task.value} head that transformers knows "
            f"({str(err).splitlines()[0][:120]})",
            "specprobe analyze measures causal-lm, masked-lm, seq2seq-lm and image-classification "
            "models; use specprobe.measure with an adapter for other models",
        )
    return SpecprobeError(f"could not load {checkpoint.model}: {err}", "check the checkpoint")


def check_loading_info(
    checkpoint: Checkpoint, class_name: str, loading: dict[str, Any], task: Task = Task.CAUSAL_LM
) -> None:
    """Raise IncompleteCheckpointError when ``from_pretrained``'s loading info lists weights
    that were missing from the checkpoint or did not fit (they were initialised at random)."""
    missing = sorted(str(k) for k in loading.get("missing_keys") or ())
    mismatched = sorted(
        str(k[0] if isinstance(k, tuple) else k) for k in loading.get("mismatched_keys") or ()
    )
    if not missing and not mismatched:
        return
    names = missing + mismatched
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    head = any(re.search(r"(^|\.)(lm_head|embed_out|output|score|classifier|cls)\.", n) for n in names)
    raise IncompleteCheckpointError(
        f"{checkpoint.model} at {checkpoint.revision} lacks weights of {class_name}: {shown} "
        f"{'missing' if missing else 'of another shape'} (they would be initialised at random)"
        + (f"; it has no output head, so it is not a {task.value} checkpoint" if head else ""),
        f"save the whole model ({AUTO_CLASSES[task]}, output head included) with save_pretrained",
    )


# ---- before the weights: config, tokenizer, the meta-device skeleton ----------------------

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")
"""Files of which a folder must hold one to have a tokenizer of its own."""


def load_tokenizer(
    checkpoint: Checkpoint,
    revision: str | None,
    trust_remote_code: bool = False,
    *,
    local_files_only: bool = False,
) -> Any:
    """The checkpoint's tokenizer: the hub revision's, or for a local folder its own, else (a
    Trainer's ``checkpoint-<step>/`` often has none) its parent's, the training directory.

    A local folder counts only when it holds tokenizer files (:data:`TOKENIZER_FILES`):
    given a folder with just ``config.json``, ``AutoTokenizer`` can build an empty
    tokenizer of the model's type instead of failing.
    """
    from transformers import AutoTokenizer

    if checkpoint.path is None:
        source: str | Path = checkpoint.model
    else:
        folders = [checkpoint.path, checkpoint.path.parent]
        found = [f for f in folders if any((f / name).is_file() for name in TOKENIZER_FILES)]
        if not found:
            raise SpecprobeError(
                f"found no tokenizer files ({', '.join(TOKENIZER_FILES)}) in "
                f"{' or '.join(str(f) for f in folders)}",
                "save the tokenizer beside the model or in the training directory (tokenizer.save_pretrained)",
            )
        source = found[0]
    try:
        return AutoTokenizer.from_pretrained(
            source, revision=revision, trust_remote_code=trust_remote_code, local_files_only=local_files_only
        )
    except (OSError, ValueError, TypeError) as err:
        if _needs_remote_code(err) and not trust_remote_code:
            raise remote_code_error(checkpoint, revision) from None
        raise SpecprobeError(
            f"could not load the tokenizer of {checkpoint.model} ({str(err).splitlines()[0][:160]})",
            "save the tokenizer beside the model (tokenizer.save_pretrained)",
        ) from None


def context_length(config: Any) -> int | None:
    """The model's maximum sequence length, when its config states one."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


@dataclass(frozen=True)
class CheckpointInfo:
    """What can be learnt about a checkpoint without loading its weights."""

    tokenizer: Any
    """The tokenizer; for an image classifier, its image processor."""
    max_positions: int | None
    skeleton: nn.Module | None = None
    """The model built from its config on the meta device (no memory, no weights), for
    checks of parameter names and output sizes before loading; None if it cannot be built."""
    task: Task = Task.CAUSAL_LM
    """The task the checkpoint is measured under (its config's, or the one asked for)."""


def model_skeleton(
    config: Any, trust_remote_code: bool = False, task: Task = Task.CAUSAL_LM
) -> nn.Module | None:
    """The model of ``config`` with its ``task`` head on the meta device, or None when it
    cannot be built."""
    import transformers

    try:
        with torch.device("meta"):
            model = getattr(transformers, AUTO_CLASSES[task]).from_config(
                config, attn_implementation="eager", trust_remote_code=trust_remote_code
            )
    except Exception:  # best effort: the checks it serves happen again when the weights load
        return None
    return cast(nn.Module, model)


def read_config(checkpoint: Checkpoint, commit: str | None, trust_remote_code: bool, local: bool) -> Any:
    """The checkpoint's transformers config (no weights); one-line errors for what cannot be read."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    source = checkpoint.path or checkpoint.model
    try:
        return AutoConfig.from_pretrained(
            source, revision=commit, trust_remote_code=trust_remote_code, local_files_only=local
        )
    except (OSError, ValueError, TypeError, KeyError, StrictDataclassError) as err:
        if _needs_remote_code(err) and not trust_remote_code:
            raise remote_code_error(checkpoint, commit) from None
        raise SpecprobeError(
            f"could not read the config of {checkpoint.model} at {checkpoint.revision}: "
            f"{' '.join(str(err).split())[:200]}",
            "check that it is a transformers checkpoint and that the values in its config.json have "
            "the right types",
        ) from None


def inspect_checkpoint(
    checkpoint: Checkpoint, commit: str | None, trust_remote_code: bool = False, task: Task | str = Task.AUTO
) -> CheckpointInfo:
    """Config and tokenizer (or image processor) only: the task it is measured under
    (:func:`~specprobe.models.tasks.resolve_task`: refused when it cannot be told apart or
    has no head), before any weights load.

    Once the hub was found unreachable (:func:`~specprobe.models.hub.cache_only`), both are
    read from the cache alone: no request, no retries."""
    local = checkpoint.path is None and cache_only()
    config = read_config(checkpoint, commit, trust_remote_code, local)
    resolved = resolve_task(config, task, checkpoint.model, trust_remote_code)
    if resolved is Task.IMAGE_CLASSIFICATION:
        processor = load_image_processor(checkpoint, commit, trust_remote_code, local_files_only=local)
    else:
        processor = load_tokenizer(checkpoint, commit, trust_remote_code, local_files_only=local)
    return CheckpointInfo(
        processor,
        context_length(config),
        model_skeleton(config, trust_remote_code, resolved),
        resolved,
    )


def load_image_processor(
    checkpoint: Checkpoint,
    revision: str | None,
    trust_remote_code: bool = False,
    *,
    local_files_only: bool = False,
) -> Any:
    """The image classifier's image processor (resizing and normalising as in training)."""
    from transformers import AutoImageProcessor

    source: str | Path = checkpoint.path if checkpoint.path is not None else checkpoint.model
    try:
        return AutoImageProcessor.from_pretrained(
            source, revision=revision, trust_remote_code=trust_remote_code, local_files_only=local_files_only
        )
    except (OSError, ValueError, TypeError) as err:
        if _needs_remote_code(err) and not trust_remote_code:
            raise remote_code_error(checkpoint, revision) from None
        raise SpecprobeError(
            f"could not load the image processor of {checkpoint.model} ({str(err).splitlines()[0][:160]})",
            "save the image processor beside the model (image_processor.save_pretrained)",
        ) from None

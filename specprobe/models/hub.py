"""Model construction and loading: the one module that imports transformers.

Models are built or loaded with eager attention: forward-mode AD and vmap do not run
through the fused scaled-dot-product attention kernels (the CPU flash kernel included),
and the eNTK operators need both.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from specprobe.choices import Device, DType, TinyArch
from specprobe.errors import SpecprobeError


def tiny_causal_lm(
    arch: TinyArch | str = TinyArch.GPT_NEOX,
    *,
    vocab_size: int = 64,
    hidden_size: int = 16,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int | None = None,
    max_positions: int = 128,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """A randomly initialised Hugging Face causal LM of the given size, in eval mode.

    Deterministic for a given ``seed``; eager attention. Parameter count for GPT-NeoX is
    about 2·V·H + L·(12·H² + 13·H) (embeddings in and out, L blocks with a 4·H MLP).
    """
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    arch = TinyArch(arch)
    inter = intermediate_size or 4 * hidden_size
    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "attn_implementation": "eager",
    }
    model: nn.Module
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch is TinyArch.GPT_NEOX:
            config: Any = GPTNeoXConfig(
                hidden_size=hidden_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                intermediate_size=inter,
                max_position_embeddings=max_positions,
                **common,
            )
            model = GPTNeoXForCausalLM(config)
        elif arch is TinyArch.GPT2:
            config = GPT2Config(
                n_embd=hidden_size,
                n_layer=num_layers,
                n_head=num_heads,
                n_inner=inter,
                n_positions=max_positions,
                tie_word_embeddings=True,
                **common,
            )
            model = GPT2LMHeadModel(config)
        elif arch is TinyArch.LLAMA:
            config = LlamaConfig(
                hidden_size=hidden_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                num_key_value_heads=max(1, num_heads // 2),
                intermediate_size=inter,
                max_position_embeddings=max_positions,
                **common,
            )
            model = LlamaForCausalLM(config)
        else:  # pragma: no cover - the Enum above is exhaustive
            raise SpecprobeError(f"unknown architecture {arch!r}", "use one of TinyArch")
    return cast(nn.Module, model).to(dtype).eval()


# ---- checkpoints: where they are, how they load -------------------------------------------

_STEP = re.compile(r"(?:^|[-_])(?:step|checkpoint)[-_]?(\d+)$|^step(\d+)$")


def parse_step(revision: str) -> int | None:
    """The training step in a revision name: ``step1000`` and ``checkpoint-1000`` give 1000."""
    match = _STEP.search(revision)
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


@dataclass(frozen=True)
class Checkpoint:
    """One model at one revision: a hub id with a revision, or a local directory."""

    model: str
    """The hub id or local path as the user gave it."""
    revision: str
    """The hub revision (branch, tag or commit), or the checkpoint-<step> folder name."""
    path: Path | None = None
    """The local directory holding config.json and the weights (None for hub ids)."""

    @property
    def step(self) -> int | None:
        return parse_step(self.revision)


LOCAL_REVISION = "local"
"""The revision name of a local directory that is itself one checkpoint."""


def find_checkpoints(model: str, revisions: Sequence[str] | None = None) -> list[Checkpoint]:
    """The checkpoints named by ``model`` and ``revisions``.

    * A local directory with ``config.json`` is one checkpoint (revision ``local``).
    * A local training output directory: its ``checkpoint-<step>`` sub-directories,
      sorted by step; ``revisions`` filters them (``checkpoint-500`` or ``500``).
    * Anything else is a hub id; ``revisions`` default to ``["main"]``.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            if revisions and list(revisions) != [LOCAL_REVISION]:
                raise SpecprobeError(
                    f"{model} is a single checkpoint (it holds config.json), found --revisions "
                    f"{','.join(revisions)}",
                    "drop --revisions, or point at a training output directory with checkpoint-* folders",
                )
            return [Checkpoint(model, LOCAL_REVISION, path)]
        found = {
            sub.name: sub
            for sub in path.iterdir()
            if sub.is_dir() and parse_step(sub.name) is not None and (sub / "config.json").is_file()
        }
        if not found:
            raise SpecprobeError(
                f"expected {model} to hold config.json or checkpoint-<step>/ folders with config.json, "
                "found neither",
                "point at a saved model (save_pretrained) or a Trainer output directory",
            )
        names = sorted(found, key=lambda n: parse_step(n) or 0)
        if revisions:
            wanted = []
            for rev in revisions:
                name = rev if rev in found else f"checkpoint-{rev}"
                if name not in found:
                    close = get_close_matches(rev, names, n=3)
                    raise SpecprobeError(
                        f"revision {rev!r} not found in {model}"
                        + (f"; did you mean {', '.join(close)}?" if close else ""),
                        f"available: {', '.join(names)}",
                    )
                wanted.append(name)
            names = sorted(set(wanted), key=lambda n: parse_step(n) or 0)
        return [Checkpoint(model, name, found[name]) for name in names]
    if path.suffix or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise SpecprobeError(
            f"expected a hub id (org/name) or an existing directory, found {model!r}, which does not exist",
            "check the path, or give a hub model id such as EleutherAI/pythia-160m",
        )
    check_hub_id(model)
    return [Checkpoint(model, rev) for rev in (revisions or ["main"])]


def check_hub_id(model: str) -> None:
    """Raise SpecprobeError unless ``model`` is a well-formed hub id (``org/name`` or ``name``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    name, at, revision = model.partition("@")
    if at:
        raise SpecprobeError(
            f"expected a hub id (org/name), found {model!r}: the revision goes in --revisions",
            f"use {name} --revisions {revision or 'main'}",
        )
    try:
        validate_repo_id(model)
    except HFValidationError:
        raise SpecprobeError(
            f"expected a hub id (org/name) or an existing directory, found {model!r}",
            "hub ids are org/name with letters, digits, '-', '_' and '.', e.g. EleutherAI/pythia-160m",
        ) from None


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
    where = f"{source}/" if checkpoint.path is not None else f"{checkpoint.model} @ {checkpoint.revision}: "
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

            path = Path(hf_hub_download(checkpoint.model, name, revision=commit or checkpoint.revision))
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
    commit: str | None
    """The hub commit the revision resolved to (None for local directories)."""
    num_params: int
    max_positions: int | None
    """The model's context length, when its config states one."""
    input_device: torch.device
    load_time_s: float


UNREACHABLE_HINT = (
    "run once with network access to download it, set HF_HOME to a cache that holds it, "
    "or set HF_HUB_OFFLINE=1 to use the cache without trying the hub"
)
_RETRIED_STATUS = (408, 429, 500, 502, 503, 504)
"""HTTP answers huggingface_hub retries (with back-off) as if the hub were unreachable."""


def hub_unreachable(repo_id: str, revision: str) -> str | None:
    """Why the hub cannot be reached, from one request without retries (a HEAD of the
    revision's config.json), or None when it answered, whatever it answered.

    huggingface_hub retries a failed download five times with back-off (about 25 s of
    "Retrying in 8s" messages) before it looks in the cache; this single attempt lets
    :func:`resolve_commit` fall back to the cache, or fail, at once.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    url = hf_hub_url(repo_id, "config.json", revision=revision)
    try:
        get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT, retry_on_errors=False)
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        return f"HTTP {status} from {constants.ENDPOINT}" if status in _RETRIED_STATUS else None
    except Exception as err:  # refused, DNS, timeout, TLS: whatever the transport raises
        return f"{constants.ENDPOINT}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    return None


def resolve_commit(repo_id: str, revision: str) -> str:
    """The 40-hex commit a hub revision points to (offline: from the cache's refs).

    When the hub cannot be reached (one attempt, :func:`hub_unreachable`), the cache
    answers if it holds the revision; otherwise this fails at once with a one-line error.
    """
    return resolve_revision(repo_id, revision)[0]


def resolve_revision(repo_id: str, revision: str) -> tuple[str, bool]:
    """:func:`resolve_commit`, and whether the hub was unreachable (so that loading the
    files reads only the cache, instead of retrying the hub for every file)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if not _offline() and (reason := hub_unreachable(repo_id, revision)) is not None:
        cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
        if not isinstance(cached, str):
            raise SpecprobeError(
                f"{repo_id} at revision {revision!r} is not in the local cache ({_hub_cache()}) "
                f"and the hub cannot be reached ({reason})",
                UNREACHABLE_HINT,
            )
        commit = Path(cached).parent.name
        return (commit if re.fullmatch(r"[0-9a-f]{40}", commit) else revision), True
    try:
        config = hf_hub_download(repo_id, "config.json", revision=revision)
    except RepositoryNotFoundError:
        raise SpecprobeError(
            f"model {repo_id!r} not found on the Hugging Face hub",
            "check the id (org/name), and log in (hf auth login or HF_TOKEN) for a private model",
        ) from None
    except RevisionNotFoundError:
        raise SpecprobeError(
            f"revision {revision!r} not found for {repo_id}",
            "list the repository's branches and tags on its hub page (Pythia: step0 … step143000)",
        ) from None
    except LocalEntryNotFoundError:
        raise SpecprobeError(
            f"{repo_id} at revision {revision!r} is not in the local cache "
            f"({_hub_cache()}) and the hub cannot be reached"
            + (" (HF_HUB_OFFLINE is set)" if _offline() else ""),
            UNREACHABLE_HINT
            if not _offline()
            else "run once with network access to download it, or set HF_HOME to a cache that holds it",
        ) from None
    except OSError as err:  # other download failures (gated repos, HTTP errors)
        raise SpecprobeError(
            f"could not fetch {repo_id} at {revision!r}: {err}", "check network access and the id"
        ) from None
    commit = Path(config).parent.name
    return (commit if re.fullmatch(r"[0-9a-f]{40}", commit) else revision), False


def load_checkpoint(
    checkpoint: Checkpoint,
    *,
    device: Device | str = Device.cpu,
    dtype: DType | str = DType.float32,
    trust_remote_code: bool = False,
    gpus: Sequence[int] | None = None,
) -> LoadedCheckpoint:
    """Load a causal LM and its tokenizer with eager attention, in eval mode.

    Hub revisions are resolved to their commit first, and the model is loaded at that
    commit, so the record names exactly the weights measured. ``device="auto"`` uses
    Accelerate's ``device_map="auto"`` across GPUs; offloading to CPU or disk is refused
    (torch.func's functional calls do not work through offload hooks). ``gpus`` limits the
    GPUs used (a process of a multi-process sweep): ``cuda`` loads onto the first of them,
    ``auto`` spreads the model over them.
    """
    import transformers
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    device, dtype = Device(device), DType(dtype)
    if device is not Device.cpu and not torch.cuda.is_available():
        if device is Device.cuda:
            raise SpecprobeError("expected a CUDA device (--device cuda), found none", "use --device cpu")
        device = Device.cpu
    commit = None
    source: str | Path = checkpoint.path if checkpoint.path is not None else checkpoint.model
    revision = None
    cache_only = False  # the hub was unreachable: read the cache without retrying the hub
    if checkpoint.path is None:
        commit, cache_only = resolve_revision(checkpoint.model, checkpoint.revision)
        revision = commit
    device_map: Any = {"": gpus[0] if gpus else 0} if device is Device.cuda else None
    max_memory: dict[Any, Any] | None = None
    if device is Device.auto:
        device_map = "auto"
        if gpus:
            from accelerate.utils import get_max_memory

            max_memory = {gpu: size for gpu, size in get_max_memory().items() if gpu in set(gpus)}
    transformers.utils.logging.disable_progress_bar()
    try:
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            source,
            revision=revision,
            dtype=dtype.torch,
            attn_implementation="eager",
            device_map=device_map,
            max_memory=max_memory,
            trust_remote_code=trust_remote_code,
            local_files_only=cache_only,
            output_loading_info=True,
        )
    except ValueError as err:
        if _needs_remote_code(err) and not trust_remote_code:
            raise remote_code_error(checkpoint, commit) from None
        if "Unrecognized configuration class" in str(err) or "AutoModelForCausalLM" in str(err):
            raise SpecprobeError(
                f"{checkpoint.model} has no causal-LM head that transformers knows "
                f"({str(err).splitlines()[0][:120]})",
                "specprobe analyze measures causal language models; use specprobe.measure with an "
                "adapter for other models",
            ) from None
        raise SpecprobeError(f"could not load {checkpoint.model}: {err}", "check the checkpoint") from None
    except OSError as err:
        raise SpecprobeError(
            f"could not load {checkpoint.model} at {checkpoint.revision}: {str(err).splitlines()[0]}",
            "check that the folder holds a complete save_pretrained checkpoint",
        ) from None
    model, loading = cast(tuple[Any, dict[str, Any]], loaded)
    check_loading_info(checkpoint, type(model).__name__, loading)
    placement = set(getattr(model, "hf_device_map", {}).values())
    if placement & {"cpu", "disk"} and device is not Device.cpu:
        raise SpecprobeError(
            f"{checkpoint.model} does not fit on the GPUs: Accelerate offloaded part of it to "
            f"{' and '.join(sorted(str(p) for p in placement & {'cpu', 'disk'}))}",
            "offloading does not work with functional autodiff; use more or larger GPUs, "
            "--dtype bfloat16, or --device cpu",
        )
    model.eval()
    tokenizer = load_tokenizer(checkpoint, revision, trust_remote_code, local_files_only=cache_only)
    max_positions = context_length(model.config)
    embeddings = model.get_input_embeddings()
    return LoadedCheckpoint(
        checkpoint=checkpoint,
        model=model,
        tokenizer=tokenizer,
        commit=commit,
        num_params=sum(p.numel() for p in model.parameters()),
        max_positions=max_positions,
        input_device=cast(torch.device, embeddings.weight.device),
        load_time_s=time.perf_counter() - start,
    )


def check_loading_info(checkpoint: Checkpoint, class_name: str, loading: dict[str, Any]) -> None:
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
    head = any(re.search(r"(^|\.)(lm_head|embed_out|output|score)\.", n) for n in names)
    raise IncompleteCheckpointError(
        f"{checkpoint.model} at {checkpoint.revision} lacks weights of {class_name}: {shown} "
        f"{'missing' if missing else 'of another shape'} (they would be initialised at random)"
        + ("; it has no output head, so it is not a causal-LM checkpoint" if head else ""),
        "save the whole causal LM (the *ForCausalLM model, output head included) with save_pretrained",
    )


def fingerprint_weights(model: nn.Module) -> str:
    """A hash over the names, shapes, dtypes and bytes of all parameters (each tensor once).

    Two revisions with equal fingerprints hold the same weights: published Pythia revisions
    contain such duplicates. Cost: one pass over the weights (a copy to CPU per tensor).
    """
    digest = hashlib.blake2b(digest_size=16)
    for name, param in model.named_parameters():
        tensor = param.detach().contiguous().cpu()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def fingerprint_tokenizer(tokenizer: Any) -> str:
    """A hash of the tokenizer's vocabulary and special tokens: equal hash, equal token ids."""
    digest = hashlib.blake2b(digest_size=16)
    vocab = tokenizer.get_vocab()
    digest.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    digest.update(repr(getattr(tokenizer, "eos_token_id", None)).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    return digest.hexdigest()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


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


EOS_TOKEN = "<|endoftext|>"
"""End-of-text token of the tokenizers specprobe trains (demo, tests)."""


def train_tokenizer(documents: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE with ``vocab_size`` entries trained on ``documents``, wrapped in
    ``PreTrainedTokenizerFast`` (end-of-text is EOS and BOS) so ``AutoTokenizer`` loads it.
    ``vocab_size`` must exceed 257 (the byte alphabet and end-of-text) for merges to be learnt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(documents, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN)


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
    max_positions: int | None
    skeleton: nn.Module | None = None
    """The model built from its config on the meta device (no memory, no weights), for
    checks of parameter names and output sizes before loading; None if it cannot be built."""


def model_skeleton(config: Any, trust_remote_code: bool = False) -> nn.Module | None:
    """The causal LM of ``config`` on the meta device, or None when it cannot be built."""
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(
                config, attn_implementation="eager", trust_remote_code=trust_remote_code
            )
    except Exception:  # best effort: the checks it serves happen again when the weights load
        return None
    return cast(nn.Module, model)


def inspect_checkpoint(
    checkpoint: Checkpoint, commit: str | None, trust_remote_code: bool = False
) -> CheckpointInfo:
    """Config and tokenizer only: checks that the model is a causal LM, before any weights load."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig

    source = checkpoint.path or checkpoint.model
    from huggingface_hub.errors import StrictDataclassError

    try:
        config = AutoConfig.from_pretrained(source, revision=commit, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError, StrictDataclassError) as err:
        if _needs_remote_code(err) and not trust_remote_code:
            raise remote_code_error(checkpoint, commit) from None
        raise SpecprobeError(
            f"could not read the config of {checkpoint.model} at {checkpoint.revision}: "
            f"{' '.join(str(err).split())[:200]}",
            "check that it is a transformers checkpoint and that the values in its config.json have "
            "the right types",
        ) from None
    auto_map = getattr(config, "auto_map", None)
    remote = isinstance(auto_map, dict) and bool(auto_map.get("AutoModelForCausalLM")) and trust_remote_code
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING and not remote:
        raise SpecprobeError(
            f"{checkpoint.model} ({type(config).__name__}, architectures "
            f"{getattr(config, 'architectures', None)}) has no causal-LM head that transformers knows",
            "specprobe analyze measures causal language models; use specprobe.measure with an adapter "
            "for other models",
        )
    return CheckpointInfo(
        load_tokenizer(checkpoint, commit, trust_remote_code),
        context_length(config),
        model_skeleton(config, trust_remote_code),
    )

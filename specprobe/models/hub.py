"""Where checkpoints are: local folders and hub revisions, each hub revision resolved to its
commit with one attempt at the hub (then the cache, or a one-line error).

No torch or transformers here: huggingface_hub only, imported inside the functions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path

from specprobe.errors import SpecprobeError
from specprobe.models.positions import parse_step

__all__ = ["LOCAL_REVISION", "Checkpoint", "find_checkpoints", "parse_step", "resolve_commit"]


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
        """The step the revision name states (:func:`specprobe.models.positions.parse_step`);
        the checkpoint's training position is :func:`specprobe.models.positions.locate`'s."""
        return parse_step(self.revision)

    @property
    def name(self) -> str:
        """``model @ revision``, as progress lines and messages name a checkpoint."""
        return f"{self.model} @ {self.revision}"


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
    if path.exists():
        raise SpecprobeError(
            f"expected a hub id (org/name) or a model directory, found {model!r}, which is a file",
            "point at the directory that holds config.json and the weights",
        )
    if written_as_path(model):
        raise SpecprobeError(
            f"expected a hub id (org/name) or an existing directory, found {model!r}, which does not exist",
            "check the path, or give a hub model id such as EleutherAI/pythia-160m",
        )
    check_hub_id(model)
    return [Checkpoint(model, rev) for rev in (revisions or ["main"])]


def written_as_path(name: str) -> bool:
    """Whether ``name`` is written as a file-system path rather than a hub id: it starts
    with ``.``, ``/`` or ``~``, holds a backslash or more than one ``/``, ends with ``/``,
    or ends with the suffix of a model or data file (``.onnx``, ``.safetensors``, …).

    Only these (or a path that exists) are taken for paths. A dot elsewhere is part of
    the hub's own names: ``EleutherAI/pythia-1.4b``, ``Qwen/Qwen2.5-0.5B``,
    ``TinyLlama/TinyLlama-1.1B-Chat-v1.0``.
    """
    return (
        name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
        or name.endswith("/")
        or Path(name).suffix.lower() in _FILE_SUFFIXES
    )


_FILE_SUFFIXES = frozenset(
    {".onnx", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".json", ".yaml", ".yml"}
)
"""Suffixes of files a user might name as a model; no published hub id ends with one."""


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


# ---- the hub: one attempt, then the cache ---------------------------------------------------

UNREACHABLE_HINT = (
    "run once with network access to download it, set HF_HOME to a cache that holds it, "
    "or set HF_HUB_OFFLINE=1 to use the cache without trying the hub"
)


_RETRIED_STATUS = (408, 429, 500, 502, 503, 504)
"""HTTP answers huggingface_hub retries (with back-off) as if the hub were unreachable."""


_UNREACHABLE: dict[str, str] = {}
"""Why the hub at an endpoint (``HF_ENDPOINT``) could not be reached, once found in this
process: every later hub call goes to the cache alone, so a sweep makes one attempt in all."""


def hub_unreachable(
    repo_id: str, revision: str, filename: str = "config.json", repo_type: str | None = None
) -> str | None:
    """Why the hub cannot be reached, from one request without retries (a HEAD of the
    revision's ``filename``), or None when it answered, whatever it answered. Once it
    could not be reached, the reason is remembered (:func:`hub_unreachable_reason`) and no
    request is made again in this process.

    huggingface_hub retries a failed download five times with back-off (about 25 s of
    "Retrying in 8s" messages) before it looks in the cache; this single attempt lets
    :func:`resolve_commit` fall back to the cache, or fail, at once.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    if (known := hub_unreachable_reason()) is not None:
        return known
    url = hf_hub_url(repo_id, filename, revision=revision, repo_type=repo_type)
    reason = None
    try:
        get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT, retry_on_errors=False)
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        reason = f"HTTP {status} from {constants.ENDPOINT}" if status in _RETRIED_STATUS else None
    except Exception as err:  # refused, DNS, timeout, TLS: whatever the transport raises
        reason = f"{constants.ENDPOINT}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    if reason is not None:
        _UNREACHABLE[constants.ENDPOINT] = reason
    return reason


def hub_unreachable_reason() -> str | None:
    """Why this process found the hub (at the current endpoint) unreachable, or None when
    it has not (yet)."""
    from huggingface_hub import constants

    return _UNREACHABLE.get(constants.ENDPOINT)


def cache_only() -> bool:
    """Whether hub files are to be read from the local cache alone: HF_HUB_OFFLINE is set,
    or this process found the hub unreachable (one attempt in all, then the cache)."""
    return _offline() or hub_unreachable_reason() is not None


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


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)

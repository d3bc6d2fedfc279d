"""Where `--model` points, checked before transformers is asked: a local folder, or a hub id reachable or cached."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from export.errors import ModelNotFound

PROBE_TIMEOUT_S = 3.0
OFFLINE_ENV = "HF_HUB_OFFLINE"


def _looks_like_a_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _cached(model: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, "config.json")
    return isinstance(found, str)


def _reachable() -> bool:
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=PROBE_TIMEOUT_S
        ).close()
        return True
    except OSError:
        return False


def check_source(model: str) -> None:
    """ModelNotFound (one line, with what to do) unless `model` can be loaded; sets HF_HUB_OFFLINE=1 for this
    process when the hub cannot be reached but the model is cached, so transformers does not retry for half a
    minute before it reads the cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{model} has no config.json: not a saved HF checkpoint (save_pretrained writes one)")
        return
    if path.exists() or _looks_like_a_path(model):
        raise ModelNotFound(
            f"no such folder: {model} (a local model is a folder with config.json; a hub id is owner/name)"
        )
    if _offline():
        if not _cached(model):
            raise ModelNotFound(
                f"{model} is not in the Hugging Face cache and {OFFLINE_ENV} is set: connect and "
                f"unset {OFFLINE_ENV} to download it, or give a local folder"
            )
        return
    if not _reachable():
        if not _cached(model):
            raise ModelNotFound(
                f"offline: cannot reach the Hugging Face hub, and {model} is not in its cache; "
                "connect to download it once, or give a local folder"
            )
        os.environ[OFFLINE_ENV] = "1"

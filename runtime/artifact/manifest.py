"""The artifact manifest's contract: schema version, required fields, the torch version rule, record checksums.

The one owner for both sides: the exporter writes a manifest with `new_manifest` and `program_entry`, the
runtime refuses one with `check`. A field the runtime needs is added here, with the schema version raised.
"""

from __future__ import annotations

import hashlib
import math
import os

from runtime.artifact.checksum import program_checksum
from runtime.errors import ArtifactError

SCHEMA_VERSION = 1
PROGRAMS = ("encoder", "decoder_step")
REQUIRED = ("source", "family", "dtype", "preprocessing", "generation", "tokenizer", "max_batch", "max_beams")
MANIFEST_FILE, TOKENIZER_FILE = "manifest.json", "tokenizer.json"  # the artifact's two extra files
GRAPHS_FILE = "graphs.json"  # the third: the programs described (runtime.artifact.graphs; manifest: graphs_sha256)


def torch_release(version: str) -> str:
    """'2.13.0+cu126' -> '2.13.0': the build (CPU, a CUDA line) does not change what an artifact needs."""
    return str(version).split("+")[0]


def running_torch() -> str:
    """The release of the torch this process runs."""
    import torch

    return torch_release(torch.__version__)


def new_manifest(**fields) -> dict:
    """A manifest of `fields`, stamped with the schema version and the exporting torch's release."""
    return {"schema_version": SCHEMA_VERSION, "torch_version": running_torch(), **fields}


def program_entry(records: dict[str, str]) -> dict:
    """A program's manifest entry from its archive records' SHA-256s: their names and one checksum over them."""
    return {"records": sorted(records), "sha256": program_checksum(records)}


def text_sha256(text: str) -> str:
    """The SHA-256 of a text record (the tokenizer's), as the manifest holds it."""
    return hashlib.sha256(text.encode()).hexdigest()


def check(manifest: dict, tokenizer_json: str, path: str | os.PathLike) -> None:
    """Refuse (`ArtifactError`, saying what to do) a manifest of another schema, lacking fields, from another
    torch release, or whose tokenizer does not match; the programs' records are checked by the caller."""
    schema = manifest.get("schema_version")
    if schema != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: manifest schema version {schema!r} is not supported by this runtime (it reads {SCHEMA_VERSION}); "
            "export the model again with the matching CaptionKit version"
        )
    missing = [key for key in REQUIRED if manifest.get(key) is None]
    if missing:
        raise ArtifactError(
            f"{path}: manifest.json lacks {', '.join(missing)}: it was written by another "
            "CaptionKit version; export the model again"
        )
    exported_with, here = torch_release(manifest.get("torch_version", "?")), running_torch()
    if exported_with != here:
        import torch

        raise ArtifactError(
            f"{path}: exported with torch {manifest.get('torch_version', '?')}, but this runtime has torch "
            f"{torch.__version__}; install torch=={exported_with} (CPU or CUDA build) or re-export with torch {here}"
        )
    if text_sha256(tokenizer_json) != manifest.get("tokenizer_sha256"):
        raise ArtifactError(f"{path}: tokenizer.json checksum mismatch: the file was modified after export")
    for name in PROGRAMS:
        if manifest.get("programs", {}).get(name) is None:
            raise ArtifactError(f"{path}: manifest lists no '{name}' program")
    _check_sizes(manifest, path)


DTYPES = ("float32", "float16", "bfloat16")
EXAMPLE_BATCH = 2  # the batch the programs are exported at: 2, so that torch.export keeps the dimension symbolic


def program_batches(max_batch: int, max_beams: int) -> tuple[int, int]:
    """The largest images and decoder rows the exported programs accept, for an artifact of `max_batch` x
    `max_beams`. torch.export needs a range around the example batch, so at `max_batch` 1 the programs accept 2
    images as well; the runtime never sends more than the manifest's max_batch."""
    return max(EXAMPLE_BATCH, max_batch), max(EXAMPLE_BATCH, max_batch * max_beams)


LIMITS = {"max_batch": 4096, "max_beams": 64, "max_length": 1 << 16}  # far above any artifact, below any overflow
MAX_SIDE = 8192  # pixels: image_size and every size in the preprocessing spec


def _check_sizes(manifest: dict, path) -> None:
    """Refuse sizes the runtime would allocate by before it allocates anything: types and ranges only."""

    def small_int(value, high: int) -> bool:
        return type(value) is int and 1 <= value <= high

    problems = [
        f"{key} {manifest.get(key)!r}" for key, high in LIMITS.items() if not small_int(manifest.get(key), high)
    ]
    size, cache = manifest.get("image_size"), manifest.get("cache")
    if type(size) is not list or len(size) != 2 or not all(small_int(v, MAX_SIDE) for v in size):
        problems.append(f"image_size {size!r}")
    if type(cache) is not dict or not all(small_int(cache.get(k), 1 << 14) for k in ("layers", "heads", "head_dim")):
        problems.append(f"cache {str(cache)[:80]}")
    gen = manifest.get("generation")
    if (
        type(gen) is not dict
        or not small_int(gen.get("max_new_tokens"), manifest.get("max_length") or 0)
        or not small_int(gen.get("num_beams"), manifest.get("max_beams") or 0)
    ):
        problems.append("generation max_new_tokens/num_beams beyond max_length/max_beams")
    elif not _decoding_values(gen):
        problems.append("generation token ids, length_penalty or early_stopping")
    if manifest.get("dtype") not in DTYPES:
        problems.append(f"dtype {str(manifest.get('dtype'))[:40]!r}")
    pre = manifest.get("preprocessing")
    sizes = [pre.get(part) or {} for part in ("size", "crop_size")] if type(pre) is dict else [None]
    if not all(type(s) is dict and all(small_int(v, MAX_SIDE) for v in s.values()) for s in sizes):
        problems.append("a preprocessing size")
    if problems:
        raise ArtifactError(
            f"{path}: manifest.json has {', '.join(problems)} outside what CaptionKit writes; "
            "this is not an artifact CaptionKit exported"
        )


MAX_TOKEN_ID = (1 << 31) - 1  # far above any vocabulary; a token id becomes an int64 index on the device
MAX_LENGTH_PENALTY = 10.0  # HF's are about 0.5-2; cur ** 10 stays a finite float for every max_length allowed


def _decoding_values(gen: dict) -> bool:
    """Whether the generation block's values that decoding computes with have the types and ranges export writes:
    token ids (start, end, forced) as non-negative ints, a finite length penalty, one of HF's early-stopping modes.
    The beam search raises the step number to the length penalty and indexes by the token ids."""

    def token(value, optional: bool = False) -> bool:
        return (optional and value is None) or (type(value) is int and 0 <= value <= MAX_TOKEN_ID)

    penalty, mode = gen.get("length_penalty"), gen.get("early_stopping")
    return (
        token(gen.get("start_token_id"))
        and token(gen.get("eos_token_id"))
        and token(gen.get("forced_bos_token_id"), optional=True)
        and token(gen.get("forced_eos_token_id"), optional=True)
        and type(penalty) in (int, float)
        and math.isfinite(penalty)
        and abs(penalty) <= MAX_LENGTH_PENALTY
        and (mode is True or mode is False or mode == "never")
    )

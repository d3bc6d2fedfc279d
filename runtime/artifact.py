"""Open a CaptionKit .pt2: verify schema, torch version and checksums, then load the programs onto a device."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from runtime import manifest as manifests
from runtime.archive import EXTRA_DIR, open_archive
from runtime.checksum import program_checksum, scan_sha256
from runtime.errors import ArtifactError
from runtime.manifest import PROGRAMS
from runtime.verified import identity, stamped_sha256, write_stamp


def _check_programs(path: Path, manifest: dict, shas: dict[str, str]) -> None:
    for name in PROGRAMS:
        entry = manifest["programs"][name]
        actual = program_checksum({rec: shas.get(rec, "missing") for rec in entry["records"]})
        if actual != entry["sha256"]:
            raise ArtifactError(
                f"{path}: checksum mismatch in program '{name}' (expected {entry['sha256'][:12]}…, "
                f"got {actual[:12]}…): the file is damaged or was tampered with; download or export it again"
            )


def verify_file(path: str | os.PathLike, expected_sha256: str | None = None, sha256_checked: bool = False,
                cache_dir: str | os.PathLike | None = None) -> tuple[dict, str, str]:
    """Check the manifest schema, the torch version and the checksums: (manifest, tokenizer, file SHA-256).

    One read of the file hashes it whole and each program record; nothing else reads it before the load.
    With `expected_sha256` (the model pointer's) the whole file must match it, and its records are not hashed:
    `make upload` verified them before it wrote the pointer. `sha256_checked=True` says the caller has just
    hashed the file against `expected_sha256` (the agent's download), so it is not read at all. With
    `cache_dir`, a file verified before and unchanged on disk since (runtime.verified) is not hashed again.
    """
    path = Path(path)
    reader = open_archive(path)
    try:
        manifest = json.loads(reader.read_string(EXTRA_DIR + manifests.MANIFEST_FILE))
        tokenizer_json = reader.read_string(EXTRA_DIR + manifests.TOKENIZER_FILE)
    except Exception as exc:
        raise ArtifactError(f"{path}: has no readable manifest.json/tokenizer.json ({exc}); not a CaptionKit artifact") from None
    manifests.check(manifest, tokenizer_json, path)
    sha = stamped_sha256(cache_dir, path)
    if sha is None and sha256_checked and expected_sha256 is not None:
        sha = expected_sha256
    elif sha is None:
        before = identity(path)
        records = {rec for name in PROGRAMS for rec in manifest["programs"][name]["records"]}
        regions = {rec: reader.region(rec) for rec in records if reader.has_record(rec)} if expected_sha256 is None else {}
        sha, shas = scan_sha256(path, regions)
        if expected_sha256 is None:
            _check_programs(path, manifest, shas)
        if expected_sha256 is None or sha == expected_sha256:
            write_stamp(cache_dir, path, sha, before)
    if expected_sha256 is not None and sha != expected_sha256:
        raise ArtifactError(f"{path}: file SHA-256 is {sha[:12]}…, the model pointer says {expected_sha256[:12]}…; "
                            "the download is incomplete or the wrong file")
    return manifest, tokenizer_json, sha


def verify(path: str | os.PathLike) -> tuple[dict, str]:
    """Every check of `verify_file`, records included, without the stamp cache: (manifest, tokenizer)."""
    manifest, tokenizer_json, _ = verify_file(path)
    return manifest, tokenizer_json


def explicit_index(device: torch.device) -> torch.device:
    """`cuda` as `cuda:<current>`: AOTInductor's compiled input check compares device strings, and a program moved
    to plain `cuda` refused the `cuda:0` tensors it was given (seen on an H200, torch 2.11)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def load_programs(path: str | os.PathLike, device: torch.device, map_weights: bool | None = None,
                  cache_dir: str | os.PathLike | None = None, sha256: str | None = None,
                  timings: dict | None = None, use_descriptions: bool = True) -> dict[str, torch.nn.Module]:
    """Load the exported programs and move them to `device` (move_to_device_pass, no CPU kernels baked in).

    Without torch's loader where a description of the programs can be had (runtime.graph_cache): the one inside
    the artifact, else, with `cache_dir` and the file's (checked) `sha256`, the local one an earlier load kept;
    a load through torch keeps one there. `use_descriptions=False` always loads through torch. `map_weights`:
    back CPU weights by a mapping of the file rather than a copy (default: runtime.load_speedups; torch's
    loader only). `timings` receives `weights_s` when a description was used.
    """
    from runtime import graph_cache

    path = Path(path)
    entry = graph_cache.cache_file(cache_dir, sha256, device) if use_descriptions else None
    if use_descriptions:
        described = graph_cache.embedded(path, device, timings) or graph_cache.load(entry, path, device, timings)
        if described is not None:
            return described
    from torch.export.passes import move_to_device_pass

    from runtime import load_speedups
    from runtime.pt2 import load_pt2

    if map_weights is None:
        map_weights = load_speedups.MAP_WEIGHTS and device.type == "cpu"

    with load_speedups.memoized_schema_type_hints(), load_speedups.mapped_weights(str(path), map_weights):
        contents = load_pt2(str(path))
    modules = {}
    for name in PROGRAMS:
        program = contents.exported_programs[name]
        if device.type != "cpu":
            program = move_to_device_pass(program, device)
        modules[name] = program.module()
    if entry is not None and (why := graph_cache.save(entry, modules, open_archive(path), device)):
        warnings.warn(f"{path.name}: graphs not kept in the local cache ({why}); it loads through torch each time",
                      stacklevel=2)
    return modules

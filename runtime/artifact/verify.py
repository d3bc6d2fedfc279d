"""Open a CaptionKit .pt2: the one validation every entry point runs, then the programs rebuilt onto a device.

`check_artifact` is called wherever an artifact enters (`make upload`, the caption CLI, the agent after its
download, the exporter's parity gate): bounded reads of the manifest, tokenizer and program description, the
manifest's schema, torch release and sizes, the checksums (or the model pointer's SHA-256), every node and
weight of the description (runtime.artifact.graphs) and each program's count of inputs and outputs against the
runtime's calling contract (runtime.artifact.contract); at upload also the sizes of every intermediate at the
smallest and the largest batch on the meta device, and each output's dtype, rank and batch dimension. Only then are
weights read. torch's own loader (`torch.export.load`) is never called on an artifact: it `exec`s strings from the
archive and unpickles `use_pickle` records.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from runtime.artifact import contract, graphs, sizes
from runtime.artifact import manifest as manifests
from runtime.artifact.archive import EXTRA_DIR, ArchiveReader, open_archive
from runtime.artifact.checksum import program_checksum, scan_sha256
from runtime.artifact.manifest import GRAPHS_FILE, PROGRAMS, running_torch, text_sha256, torch_release
from runtime.cache import stamped_or_hashed, stamped_sha256
from runtime.errors import ArtifactError

# a base-size description is about 0.3 MiB and the largest tokenizers about 11 MiB; parsed JSON takes ~10x its text
LIMITS = {manifests.MANIFEST_FILE: 1 << 20, manifests.TOKENIZER_FILE: 32 << 20, GRAPHS_FILE: 16 << 20}
AGAIN = "export the model again with this CaptionKit version"


@dataclass
class Checked:
    """An artifact that passed every check: what the captioner needs, and its programs ready to build."""

    path: Path
    manifest: dict
    tokenizer_json: str
    sha256: str
    programs: dict[str, graphs.Program]


def _read(reader: ArchiveReader, path: Path, name: str) -> str:
    if not reader.has_record(EXTRA_DIR + name):
        if name == GRAPHS_FILE:
            raise ArtifactError(
                f"{path}: has no program description (extra/{GRAPHS_FILE}); it was exported "
                f"before descriptions existed and is not loaded through torch's unsafe loader; {AGAIN}"
            )
        raise ArtifactError(f"{path}: has no extra/{name}; not a CaptionKit artifact")
    return reader.read_string(EXTRA_DIR + name, LIMITS[name])


def _check_programs(path: Path, manifest: dict, shas: dict[str, str]) -> None:
    for name in PROGRAMS:
        entry = manifest["programs"][name]
        actual = program_checksum({rec: shas.get(rec, "missing") for rec in entry["records"]})
        if actual != entry["sha256"]:
            raise ArtifactError(
                f"{path}: checksum mismatch in program '{name}' (expected {entry['sha256'][:12]}…, "
                f"got {actual[:12]}…): the file is damaged or was tampered with; download or export it again"
            )


def _sha256(path: Path, reader: ArchiveReader, manifest: dict, expected: str | None, checked: bool, cache_dir) -> str:
    """The file's SHA-256: stamped, the caller's (just hashed against the pointer), or one read of the file that
    also checks each program's records (unless the pointer's SHA-256 vouches for the whole file)."""
    if checked and expected is not None:
        sha = stamped_sha256(cache_dir, path) or expected
    else:
        sha = stamped_or_hashed(
            cache_dir,
            path,
            lambda: _scan(path, reader, manifest, expected),
            keep=lambda found: expected is None or found == expected,
        )
    if expected is not None and sha != expected:
        raise ArtifactError(
            f"{path}: file SHA-256 is {sha[:12]}…, the model pointer says {expected[:12]}…; "
            "the download is incomplete or the wrong file"
        )
    return sha


def _scan(path: Path, reader: ArchiveReader, manifest: dict, expected: str | None) -> str:
    """One read of the file: its SHA-256, and each program's records checked unless `expected` vouches for them."""
    records = manifest["programs"]
    if any(
        type(e) is not dict or type(e.get("records")) is not list or type(e.get("sha256")) is not str
        for e in (records[name] for name in PROGRAMS)
    ):
        raise ArtifactError(f"{path}: manifest.json's program entries are not CaptionKit's; {AGAIN}")
    names = {rec for name in PROGRAMS for rec in records[name]["records"] if type(rec) is str}
    regions = {rec: reader.region(rec) for rec in names if reader.has_record(rec)} if expected is None else {}
    sha, shas = scan_sha256(path, regions)
    if expected is None:
        _check_programs(path, manifest, shas)
    return sha


def _programs(reader: ArchiveReader, path: Path, manifest: dict) -> dict[str, graphs.Program]:
    text = _read(reader, path, GRAPHS_FILE)
    if text_sha256(text) != manifest.get("graphs_sha256"):
        raise ArtifactError(f"{path}: {GRAPHS_FILE} checksum mismatch: the file was modified after export")
    try:
        description = json.loads(text)
        if type(description) is dict and torch_release(str(description.get("torch"))) != running_torch():
            raise graphs.BadDescription(f"described with torch {str(description.get('torch'))[:40]}")
        return graphs.check(description, reader)
    except (graphs.BadDescription, ValueError, RecursionError) as exc:
        raise ArtifactError(
            f"{path}: program description refused ({type(exc).__name__}: {str(exc)[:300]}); "
            f"nothing of it was run; {AGAIN}"
        ) from None


def memory_limit(device: torch.device) -> int:
    """Bytes a program's live tensors may take at once on `device`: the GPU's memory, or the machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_sizes(checked: Checked, limit: int) -> None:
    """Run both programs on the meta device at one image and at the manifest's largest batch (rows = batch x
    beams for the step) with the inputs the runtime makes (runtime.artifact.contract): every intermediate is sized
    and nothing is allocated, and every output is checked against the contract (dtype, rank, batch dimension). An op
    that cannot run on such inputs, an output the runtime cannot take, or a program whose live tensors would outgrow
    `limit` is refused before any weight is read."""
    m = checked.manifest
    for batch, rows in ((1, 1), (m["max_batch"], m["max_batch"] * m["max_beams"])):
        name = "encoder"
        try:
            outputs, _ = sizes.peak_bytes(checked.programs[name], contract.encoder_inputs(m, batch), limit)
            cross_k, cross_v = contract.check_encoder(outputs, m, batch)
            name, step = "decoder_step", contract.step_inputs(m, rows, cross_k, cross_v)
            outputs, _ = sizes.peak_bytes(checked.programs[name], step, limit)
            contract.check_step(outputs, step, rows)
            contract.check_token_ids(outputs[0], m["generation"])
        except graphs.BadDescription as exc:
            where = "" if str(exc).startswith(f"program {name}") else f"program {name}: "
            raise ArtifactError(
                f"{checked.path}: program description refused at batch {batch} ({where}{exc}); {AGAIN}"
            ) from None
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ArtifactError(
                f"{checked.path}: program {name}'s outputs are not a captioner's "
                f"({type(exc).__name__}: {str(exc)[:200]}); {AGAIN}"
            ) from None


def check_artifact(
    path: str | os.PathLike,
    expected_sha256: str | None = None,
    sha256_checked: bool = False,
    cache_dir: str | os.PathLike | None = None,
    device: torch.device | None = None,
    sizes: bool = False,
) -> Checked:
    """Every check, in the order that reads least before it refuses (raises ArtifactError saying why).

    With `expected_sha256` (the model pointer's) the whole file must match it and its records are not hashed
    (`make upload` checked them before it wrote the pointer); `sha256_checked=True` says the caller has just
    hashed the file against it (the agent's download). With `cache_dir`, a file checked before and unchanged on
    disk since (runtime.cache) is not hashed again; nothing else is taken from the cache. `sizes` also runs
    both programs on the meta device (about a second, most of it torch's decomposition imports): `make upload`
    does, before it publishes to the fleet; `device` sets the memory they may need (default: this machine's RAM).
    Every load checks constant allocation sizes statically (runtime.artifact.graphs).
    """
    path = Path(path)
    reader = open_archive(path)
    try:
        manifest = json.loads(_read(reader, path, manifests.MANIFEST_FILE))
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(
            f"{path}: manifest.json is not JSON ({str(exc)[:120]}); not a CaptionKit artifact"
        ) from None
    if type(manifest) is not dict:
        raise ArtifactError(f"{path}: manifest.json is not an object; not a CaptionKit artifact")
    tokenizer_json = _read(reader, path, manifests.TOKENIZER_FILE)
    manifests.check(manifest, tokenizer_json, path)
    sha = _sha256(path, reader, manifest, expected_sha256, sha256_checked, cache_dir)
    checked = Checked(path, manifest, tokenizer_json, sha, _programs(reader, path, manifest))
    if sizes:
        _check_sizes(checked, memory_limit(device or torch.device("cpu")))
    return checked


def verify_file(
    path: str | os.PathLike,
    expected_sha256: str | None = None,
    sha256_checked: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[dict, str, str]:
    """`check_artifact`'s (manifest, tokenizer, file SHA-256)."""
    checked = check_artifact(path, expected_sha256, sha256_checked, cache_dir)
    return checked.manifest, checked.tokenizer_json, checked.sha256


def verify(path: str | os.PathLike) -> tuple[dict, str]:
    """Every check, records and sizes included, without the stamp cache: (manifest, tokenizer)."""
    checked = check_artifact(path, sizes=True)
    return checked.manifest, checked.tokenizer_json

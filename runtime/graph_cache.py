"""Programs loaded without torch's deserializer: from a description inside the artifact, or in the local cache.

`torch.export` loading spends most of its time outside the weights: importing its schema code (which pulls in
`torch._dynamo`), turning the JSON schema into dataclasses, building a fake tensor and re-parsing sympy
expressions for every graph value (BENCHMARKS.md, issue 16). What the runtime calls afterwards is a graph of
aten calls reading weights by attribute, which runtime.graph_format writes down as plain JSON and rebuilds.
Two places hold such a description:

- Inside the artifact (`extra/graphs.json`): the exporter loads the file it wrote through torch, describes the
  programs, writes the file again with the description and checks that torch loads the final file to the
  very same description. Its SHA-256 is in the manifest, so it is checked like the tokenizer; it is used by
  the same torch release only. Every load of such an artifact, the first one included, skips torch's loader.
- In the local cache (`<cache>/graphs/`), for an artifact without one: the first load through torch writes it,
  keyed by the artifact's SHA-256 (already checked: stamp or hash), the torch version, the device and the
  format, with each weight's file offset.

A description that is damaged, edited, or from another torch is named in a warning and not used: the load goes
through torch (and writes the local entry again).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from torch import fx

from runtime.archive import EXTRA_DIR, ArchiveReader, open_archive
from runtime.cache_write import write_whole
from runtime.graph_format import FORMAT, NotDescribable, describe, dumps, rebuild
from runtime.manifest import GRAPHS_FILE, MANIFEST_FILE, running_torch, text_sha256, torch_release

GRAPH_DIR = "graphs"
ENABLED = True  # bench.load_phases turns it off to measure torch's loader and its own levers


def cache_file(cache_dir: str | os.PathLike | None, sha256: str | None, device: torch.device) -> Path | None:
    """`<cache>/graphs/<sha256>-<torch, device, format digest>.json`, or None without a cache dir or SHA-256."""
    if not (ENABLED and cache_dir is not None and sha256):
        return None
    where = hashlib.sha256(f"{torch.__version__}|{device}|{FORMAT}".encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / GRAPH_DIR / f"{sha256}-{where}.json"


def save(path: Path | None, modules: dict[str, fx.GraphModule], reader: ArchiveReader,
         device: torch.device) -> str | None:
    """Write the local entry for `modules` (best effort). Returns why nothing was written, or None."""
    if path is None:
        return "no cache"
    try:
        text = dumps(describe(modules, reader, device))
    except NotDescribable as exc:
        return str(exc)
    failed = write_whole(path, lambda partial: partial.write_text(text))
    return f"cache not writable: {failed}" if failed else None


def _unusable(where, exc: Exception) -> None:
    warnings.warn(f"{where}: graph description not used ({type(exc).__name__}: {str(exc)[:200]}); "
                  "loading through torch", stacklevel=4)


def load(path: Path | None, artifact: Path, device: torch.device,
         timings: dict | None = None) -> dict[str, fx.GraphModule] | None:
    """The programs rebuilt from the local entry at `path`, or None when there is none (or it cannot be used)."""
    if path is None or not path.is_file():
        return None
    try:
        description = json.loads(path.read_text())
        if description["torch"] != torch.__version__ or description["device"] != str(device):
            raise ValueError(f"made for torch {description['torch']} on {description['device']}")
        return rebuild(description, artifact, device, timings=timings)
    except Exception as exc:  # damaged or edited: the caller loads through torch and writes the entry again
        _unusable(path, exc)
        return None


def embedded(artifact: Path, device: torch.device, timings: dict | None = None) -> dict[str, fx.GraphModule] | None:
    """The programs rebuilt from the description inside the artifact, or None when it has none (or it cannot
    be used: checksum, torch release)."""
    if not ENABLED:
        return None
    reader = open_archive(artifact)
    if not reader.has_record(EXTRA_DIR + GRAPHS_FILE):
        return None
    try:
        text = reader.read_string(EXTRA_DIR + GRAPHS_FILE)
        manifest = json.loads(reader.read_string(EXTRA_DIR + MANIFEST_FILE))
        if text_sha256(text) != manifest.get("graphs_sha256"):
            raise ValueError("its SHA-256 is not the manifest's: the file was modified after export")
        description = json.loads(text)
        if torch_release(description["torch"]) != running_torch():
            raise ValueError(f"made with torch {description['torch']}")
        return rebuild(description, artifact, device, reader=reader, timings=timings)
    except Exception as exc:
        _unusable(f"{artifact} ({GRAPHS_FILE})", exc)
        return None


def for_archive(artifact: Path) -> str:
    """The description to keep inside `artifact`: its programs loaded through torch on the CPU, weights by record
    (raises NotDescribable). The exporter writes it into the final file and checks it with `matches`."""
    from runtime.artifact import load_programs

    cpu = torch.device("cpu")
    return dumps(describe(load_programs(artifact, cpu, use_descriptions=False), open_archive(artifact), cpu,
                          offsets=False))


def matches(artifact: Path, text: str) -> bool:
    """Whether torch loads `artifact` to exactly the description `text` (the exporter's check of its final file)."""
    try:
        return for_archive(artifact) == text
    except NotDescribable:
        return False

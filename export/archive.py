"""Write the one-file .pt2 archive: both programs, tokenizer.json and manifest.json with per-program checksums."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from torch.export import ExportedProgram

# The one private torch call left: the per-program checksums need each record's bytes as it is written, and
# only this helper writes a program into a writer the caller holds (package_pt2 opens its own writer and does
# not say which records belong to which program). No torch release so far (2.13 checked) offers a public way;
# if one does, hash the records from a PT2ArchiveReader after package_pt2 instead.
from torch.export.pt2_archive._package import _package_exported_programs

from runtime.artifact import manifest as manifests
from runtime.artifact.pt2 import EXTRA_DIR, PT2ArchiveWriter


class _HashingWriter:
    """Passes records to the archive writer and remembers each one's SHA-256, for the manifest."""

    def __init__(self, writer: PT2ArchiveWriter):
        self._writer = writer
        self.records: dict[str, str] = {}

    def write_bytes(self, name: str, data: bytes) -> None:
        self.records[name] = hashlib.sha256(data).hexdigest()
        self._writer.write_bytes(name, data)

    def write_string(self, name: str, data: str) -> None:
        self.write_bytes(name, data.encode())

    def __getattr__(self, name):
        return getattr(self._writer, name)


def write_archive(
    path: str | os.PathLike,
    programs: dict[str, ExportedProgram],
    tokenizer_json: str,
    manifest: dict,
    graphs: str | None = None,
) -> dict:
    """Write the archive atomically (temp file then rename); returns the manifest as written. `graphs`: the
    programs' description (runtime.artifact.describe), kept as extra/graphs.json with its SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The archive's inner folder is named after the file, so write under the final name in a temp folder.
    tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=path.parent)) / path.name
    manifest = dict(manifest, programs={})
    with PT2ArchiveWriter(str(tmp)) as writer:
        for name, program in programs.items():
            hashing = _HashingWriter(writer)
            _package_exported_programs(hashing, {name: program})
            manifest["programs"][name] = manifests.program_entry(hashing.records)
        manifest["tokenizer_sha256"] = manifests.text_sha256(tokenizer_json)
        writer.write_string(EXTRA_DIR + manifests.TOKENIZER_FILE, tokenizer_json)
        if graphs is not None:
            manifest["graphs_sha256"] = manifests.text_sha256(graphs)
            writer.write_string(EXTRA_DIR + manifests.GRAPHS_FILE, graphs)
        writer.write_string(EXTRA_DIR + manifests.MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, path)
    tmp.parent.rmdir()
    return manifest


def _description(path: Path) -> str:
    """The description of the programs in `path`, a file this export has just written (so torch's loader, unsafe
    for archives from elsewhere, is fine here), loaded on the CPU (raises NotDescribable)."""
    import torch

    from runtime.artifact.archive import open_archive
    from runtime.artifact.describe import describe, dumps
    from runtime.artifact.pt2 import load_pt2

    contents = load_pt2(str(path))
    modules = {name: contents.exported_programs[name].module() for name in manifests.PROGRAMS}
    return dumps(describe(modules, open_archive(path), torch.device("cpu")))


def describe_programs(path: Path, programs: dict[str, ExportedProgram], tokenizer_json: str, manifest: dict) -> str:
    """Write `path` again with its programs' description inside (runtime.artifact.describe), the only form the runtime
    loads, and check that torch loads the final file to that very description. Returns what was done, for the
    export log; raises NotDescribable when the programs cannot be described or do not match."""
    from runtime.artifact.describe import NotDescribable

    graphs = _description(path)
    write_archive(path, programs, tokenizer_json, manifest, graphs=graphs)
    try:
        again = _description(path)
    except NotDescribable as exc:
        again = str(exc)
    if again != graphs:
        raise NotDescribable("torch loads the rewritten file to another graph than described")
    return f"described inside the artifact ({len(graphs) / 1024:.0f} KiB)"

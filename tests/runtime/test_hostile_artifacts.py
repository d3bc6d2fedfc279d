"""An edited .pt2 is data: every attack on the loader ends in a clear refusal (or a load that ignores it), never code.

Each payload, if it ever ran, would create a marker file; each test asserts there is none. The attacker recomputes
the manifest's checksums (artifact_tools.forge): they live in the archive they edit, so they prove nothing.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

import artifact_tools
from artifact_tools import refused
from runtime.captioner import load_captioner
from runtime.errors import ArtifactError


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "payload-ran"


def _code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def _calls(description: dict, program: str = "encoder") -> list[dict]:
    return [n for n in description["programs"][program]["nodes"] if n["op"] == "call_function"]


def _rename(description: dict, old: str, new: str) -> None:
    def walk(value):
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {"node": new} if value == {"node": old} else {k: walk(v) for k, v in value.items()}
        return value

    for program in description["programs"].values():
        for node in program["nodes"]:
            node["name"] = new if node["name"] == old else node["name"]
            node["args"] = walk(node.get("args", []))
            node["kwargs"] = walk(node.get("kwargs", {}))


def _placeholder_name(d, marker):
    first = next(n for n in d["programs"]["encoder"]["nodes"] if n["op"] == "placeholder")
    _rename(d, first["name"], f"x=({_code(marker)})#")


def _kwargs_key(d, marker):
    _calls(d)[0].setdefault("kwargs", {})[f"x=({_code(marker)})#"] = 1


def _get_attr_target(d, marker):
    node = next(n for n in d["programs"]["encoder"]["nodes"] if n["op"] == "get_attr")
    node["target"] = f"x; {_code(marker)}"


def _operator_chain(d, marker):
    nodes = d["programs"]["encoder"]["nodes"]
    nodes[1:1] = [
        {"name": "getter", "op": "call_function", "target": "operator.attrgetter", "args": ["system"]},
        {"name": "called", "op": "call_function", "target": "operator.call", "args": [{"node": "getter"}, "touch"]},
    ]


def _from_file(d, marker):
    _calls(d)[0].update(target="aten.from_file.default", args=[str(marker), True, 16], kwargs={})


def _ones_huge(d, marker):
    _calls(d)[0].update(target="aten.ones.default", args=[[1 << 34]], kwargs={})


def _zeros_huge(d, marker):
    _calls(d)[0].update(target="aten.zeros.default", args=[[1 << 20, 1 << 14]], kwargs={})


def _weight_past_its_record(d, marker):
    next(iter(d["programs"]["encoder"]["weights"].values())).update(size=[1 << 20, 1 << 20], stride=[1 << 20, 1])


def _weight_in_another_record(d, marker):
    next(iter(d["programs"]["encoder"]["weights"].values()))["record"] = "extra/manifest.json"


def _string_with_code(d, marker):
    _calls(d)[0]["args"].append(f"__import__('os').system('touch {marker}')")


def _unknown_dtype(d, marker):
    next(iter(d["programs"]["encoder"]["weights"].values()))["dtype"] = "__class__"


def _forward_reference(d, marker):
    _calls(d)[0]["args"][0] = {"node": "output"}


def _input_added(d, marker):
    d["programs"]["encoder"]["nodes"].insert(0, {"name": "extra_input", "op": "placeholder"})


def _output_dropped(d, marker):
    output = d["programs"]["decoder_step"]["nodes"][-1]
    output["args"][0]["tuple"] = output["args"][0]["tuple"][:2]


ATTACKS = {  # name: (edit, what the refusal says; None: the edit is ignored and the artifact loads)
    "placeholder name pasted into forward": (_placeholder_name, None),
    "kwargs key pasted into forward": (_kwargs_key, "has no keyword argument"),
    "get_attr target pasted into forward": (_get_attr_target, "op 'get_attr' with these fields"),
    "operator.attrgetter / operator.call chain": (_operator_chain, "not on the allow-list"),
    "aten.from_file reads or maps a path": (_from_file, "not on the allow-list"),
    "aten.ones of 2**34 elements": (_ones_huge, "not on the allow-list"),
    "aten.zeros of 2**34 elements": (_zeros_huge, "would allocate"),
    "a weight viewing past its record": (_weight_past_its_record, "reaches byte"),
    "a weight in a non-weight record": (_weight_in_another_record, "not a weight record"),
    "a string argument holding code": (_string_with_code, "not a short identifier"),
    "a dtype name that is no dtype": (_unknown_dtype, "not a tensor's"),
    "a reference to a later node": (_forward_reference, "not a known node or an earlier node|an earlier node"),
    "an input added to a program": (
        _input_added,
        r"program encoder takes 2 values; the runtime's contract is 1 "
        r"\(pixel_values\)",
    ),
    "an output dropped from a program": (
        _output_dropped,
        r"program decoder_step returns 2 values; the runtime's "
        r"contract is 3 \(logits, self_k, self_v\)",
    ),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_an_edited_description_runs_nothing_and_is_refused_or_ignored(attack, tiny_artifact, tmp_path, marker):
    edit, refusal = ATTACKS[attack]
    forged = artifact_tools.forge(tiny_artifact, tmp_path / "forged.pt2", graphs=lambda d: edit(d, marker))
    if refusal is None:
        captioner = load_captioner(forged, "cpu")  # names are the format's own: the edited one is never used
        from export.cli import parity_images

        assert captioner.caption(parity_images([], 2, seed=3))
    else:
        refused(forged, refusal)
    assert not marker.exists()


def test_guards_code_in_torchs_serialized_program_is_never_run(tiny_artifact, tmp_path, marker):
    """torch 2.13 builds a module's guard function with `exec` from `guards_code`; the runtime never calls torch's
    loader, so an edited program record changes nothing (and the model still captions)."""
    program = json.loads(zipfile.ZipFile(tiny_artifact).read(f"{tiny_artifact.stem}/models/encoder.json"))
    assert program["guards_code"] == []
    program["guards_code"] = [_code(marker)]
    forged = artifact_tools.forge(
        tiny_artifact, tmp_path / "guards.pt2", records={"models/encoder.json": json.dumps(program).encode()}
    )
    from export.cli import parity_images

    assert load_captioner(forged, "cpu").caption(parity_images([], 1, seed=3))
    assert not marker.exists()


def test_a_pickled_weight_is_never_unpickled(tiny_artifact, tmp_path, marker):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    config_name = "data/weights/encoder_weights_config.json"
    config = json.loads(zipfile.ZipFile(tiny_artifact).read(f"{tiny_artifact.stem}/{config_name}"))
    fqn, meta = next(iter(config["config"].items()))
    meta["use_pickle"] = True
    forged = artifact_tools.forge(
        tiny_artifact,
        tmp_path / "pickled.pt2",
        records={
            config_name: json.dumps(config).encode(),
            "data/weights/" + meta["path_name"]: pickle.dumps(Payload()),
        },
    )
    refused(forged, "holds .* bytes, the description says")  # its description no longer matches the record
    assert not marker.exists()


def test_an_artifact_without_a_description_is_refused_not_loaded_through_torch(tiny_artifact, tmp_path):
    from runtime.artifact.pt2 import PT2ArchiveReader, PT2ArchiveWriter

    reader, out = PT2ArchiveReader(str(tiny_artifact)), tmp_path / "old.pt2"
    with PT2ArchiveWriter(str(out)) as writer:
        for name in reader.get_file_names():
            if name != "extra/graphs.json" and not name.startswith(".data/") and name != "byteorder":
                writer.write_bytes(name, reader.read_bytes(name))
    refused(out, "has no program description .* not loaded through torch's unsafe loader; export the model again")


def _with_entry(src: Path, dst: Path, name: str, data_chunks, compress: int) -> Path:
    """A copy of the archive where `name` is written from `data_chunks`, with `compress` (zipfile's constant)."""
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w") as out:
        root = archive.namelist()[0].split("/", 1)[0]
        for info in archive.infolist():
            if info.filename != f"{root}/{name}":
                out.writestr(info, archive.read(info))
        info = zipfile.ZipInfo(f"{root}/{name}")
        info.compress_type = compress
        with out.open(info, "w", force_zip64=True) as entry:
            for chunk in data_chunks:
                entry.write(chunk)
    return dst


def test_a_deflated_bomb_is_refused_before_a_byte_is_inflated(tiny_artifact, tmp_path):
    zeros = bytes(1 << 20)
    bomb = _with_entry(
        tiny_artifact, tmp_path / "bomb.pt2", "extra/tokenizer.json", (zeros for _ in range(512)), zipfile.ZIP_DEFLATED
    )
    assert bomb.stat().st_size < 4 << 20 and zipfile.ZipFile(bomb).infolist()[-1].file_size == 512 << 20
    refused(bomb, "is compressed or encrypted")


def test_an_oversized_stored_record_is_refused_before_it_is_read(tiny_artifact, tmp_path):
    big = _with_entry(
        tiny_artifact, tmp_path / "big.pt2", "extra/manifest.json", [b" " * (2 << 20)], zipfile.ZIP_STORED
    )
    refused(big, "over the 1048576-byte limit")


def test_deeply_nested_json_is_refused_with_a_reason(tiny_artifact, tmp_path):
    forged = artifact_tools.forge(tiny_artifact, tmp_path / "deep.pt2")
    text = "[" * 100_000 + "]" * 100_000
    forged = artifact_tools.forge(forged, tmp_path / "deep2.pt2", records={"extra/graphs.json": text.encode()})
    refused(forged, "program description refused .*RecursionError")


def test_the_caption_cli_prints_one_line_and_exits_non_zero(tiny_artifact, tmp_path, marker):
    forged = artifact_tools.forge(tiny_artifact, tmp_path / "cli.pt2", graphs=lambda d: _from_file(d, marker))
    out = artifact_tools.caption_cli(forged, tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("caption: ") and "allow-list" in out.stderr
    assert not marker.exists()


def test_upload_refuses_a_forged_artifact_before_sending_a_byte(tiny_artifact, tmp_path, marker):
    from runtime import registry

    class NoS3:
        def __getattr__(self, name):
            pytest.fail(f"s3.{name} called for a refused artifact")

    forged = artifact_tools.forge(tiny_artifact, tmp_path / "up.pt2", graphs=lambda d: _kwargs_key(d, marker))
    with pytest.raises(ArtifactError, match="has no keyword argument"):
        registry.publish(NoS3(), "bucket", forged)
    assert not marker.exists()


def test_the_caption_cli_refuses_a_program_with_an_added_input_in_one_line(tiny_artifact, tmp_path, marker):
    forged = artifact_tools.forge(tiny_artifact, tmp_path / "cli.pt2", graphs=lambda d: _input_added(d, marker))
    out = artifact_tools.caption_cli(forged, tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("caption: ") and "program encoder takes 2 values" in out.stderr

"""Program descriptions (inside the artifact, or in the local cache): the very graphs, weights and tokens torch's
loader gives, no torch deserializer, and no code run from them."""
from __future__ import annotations

import copy
import json
import math
import shutil
import os
import subprocess
import sys
from pathlib import Path

import pytest

import torch
from torch import fx

from export.cli import parity_images
from runtime import graph_cache, graph_format
from runtime.agent.config import AgentConfig
from runtime.agent.pointer import backend_options
from runtime.archive import open_archive
from runtime.artifact import load_programs
from runtime.captioner import load_captioner
from runtime.checksum import file_sha256
from runtime.graph_linears import attr

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def older_artifact(monkeypatch):
    """Loads as if the artifact held no description (exported before they were kept inside): the local cache's case."""
    monkeypatch.setattr(graph_cache, "embedded", lambda *a, **k: None)


def _torch_loaded(artifact) -> dict:
    return load_programs(artifact, CPU, use_descriptions=False)


def _same_programs(described: dict, loaded: dict) -> None:
    for name in loaded:
        assert _shape_of(described[name]) == _shape_of(loaded[name])
        a, b = _weights(loaded[name]), _weights(described[name])
        assert a.keys() == b.keys() and _aliasing(a) == _aliasing(b)
        for target in a:
            assert (b[target].dtype, b[target].shape, b[target].stride()) == (a[target].dtype, a[target].shape, a[target].stride())
            assert type(b[target]) is type(a[target]) and b[target].requires_grad == a[target].requires_grad
            assert torch.equal(b[target], a[target]), target


def _same_tokens(captioner, programs: dict) -> None:
    reference = copy.copy(captioner)
    reference.encoder, reference.step = programs["encoder"], programs["decoder_step"]
    from runtime.decode_layout import apply_decode_layout

    apply_decode_layout(reference.step)
    pixels = reference.preprocess(parity_images([], 3, seed=5))
    for beams in sorted({1, reference.max_beams}):
        assert captioner.generate_ids(pixels, beams) == reference.generate_ids(pixels, beams)


def _no_torch_loader(monkeypatch):
    import runtime.pt2

    monkeypatch.setattr(runtime.pt2, "load_pt2", lambda *a, **k: pytest.fail("loaded through torch"))


def _entry(cache: Path) -> Path:
    entries = list((cache / graph_cache.GRAPH_DIR).glob("*.json"))
    assert len(entries) == 1, entries
    return entries[0]


def _shape_of(gm: fx.GraphModule) -> list:
    """The graph as calls: op, target and arguments (nodes by position), export's no-op guard call left out."""
    index, out = {}, []
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == graph_format.GUARDS:
            continue
        index[node] = len(index)
        args = fx.node.map_arg((node.args, node.kwargs), lambda n: ("node", index[n]))
        out.append((node.op, node.target if node.op != "placeholder" else node.name, repr(args)))
    return out


def _weights(gm: fx.GraphModule) -> dict[str, torch.Tensor]:
    found = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            found[node.target] = attr(gm, node.target)
    return found


def _aliasing(weights: dict[str, torch.Tensor]) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for name, tensor in weights.items():
        groups.setdefault(tensor.untyped_storage().data_ptr(), []).append(name)
    return sorted(sorted(g) for g in groups.values())


@pytest.mark.parametrize("family", ["tiny_artifact", "tiny_trocr_artifact", "tiny_blip_artifact",
                                    "tiny_florence2_artifact"])
def test_an_exported_artifact_loads_through_its_own_description_to_torchs_graphs_and_tokens(family, request,
                                                                                            monkeypatch):
    artifact = request.getfixturevalue(family)
    reader = open_archive(artifact)
    manifest = json.loads(reader.read_string("extra/manifest.json"))
    assert len(manifest["graphs_sha256"]) == 64 and reader.has_record("extra/graphs.json")
    loaded = _torch_loaded(artifact)
    _no_torch_loader(monkeypatch)
    timings = {}
    described = load_programs(artifact, CPU, timings=timings)  # no cache dir: the first load on a machine
    assert "weights_s" in timings
    _same_programs(described, loaded)
    _same_tokens(load_captioner(artifact, "cpu"), loaded)


def test_an_artifact_without_a_description_keeps_one_in_the_local_cache(tiny_artifact, tmp_path, monkeypatch,
                                                                         older_artifact):
    sha = file_sha256(tiny_artifact)
    loaded = load_programs(tiny_artifact, CPU, cache_dir=tmp_path, sha256=sha)  # through torch, keeps the entry
    entry = _entry(tmp_path)
    _no_torch_loader(monkeypatch)
    cached = load_programs(tiny_artifact, CPU, cache_dir=tmp_path, sha256=sha)
    assert _entry(tmp_path) == entry
    _same_programs(cached, loaded)
    _same_tokens(load_captioner(tiny_artifact, "cpu", cache_dir=tmp_path), loaded)


def test_the_device_move_of_a_cpu_description_is_torchs_move_to_device_pass(tiny_artifact):
    from torch.export.passes import move_to_device_pass

    from runtime.pt2 import load_pt2

    meta = torch.device("meta")  # any device torch can move a program to; the graphs are compared, not run
    programs = load_pt2(str(tiny_artifact)).exported_programs
    moved_by_torch = {name: graph_format._graph(move_to_device_pass(programs[name], meta).module()) for name in programs}
    on_cpu = {name: graph_format._graph(ep.module()) for name, ep in load_pt2(str(tiny_artifact)).exported_programs.items()}
    assert any("device" in n.get("kwargs", {}) for nodes in on_cpu.values() for n in nodes)  # something to move
    for name in programs:
        assert graph_format._moved(on_cpu[name], meta) == moved_by_torch[name]
        assert graph_format._moved(on_cpu[name], meta) != on_cpu[name]


def test_a_tampered_description_inside_the_artifact_is_not_used(tiny_artifact, tmp_path):
    tampered = shutil.copyfile(tiny_artifact, tmp_path / "t.pt2")
    offset, size = open_archive(tampered).region("extra/graphs.json")
    with open(tampered, "r+b") as f:  # one digit changed: still JSON and UTF-8 (torch's loader reads it as text)
        f.seek(offset)
        text = f.read(size)
        at = next(i for i in range(len(text) // 2, len(text)) if chr(text[i]).isdigit())
        f.seek(offset + at)
        f.write(b"7" if text[at:at + 1] != b"7" else b"3")
    with pytest.warns(UserWarning, match="graph description not used .*SHA-256 is not the manifest's"):
        programs = load_programs(tampered, CPU)
    _same_programs(programs, _torch_loaded(tiny_artifact))


def test_the_first_load_of_an_exported_artifact_never_imports_the_export_deserializer(tiny_artifact):
    probe = (
        "import sys, json\n"
        "from runtime.captioner import load_captioner\n"
        f"c = load_captioner({str(tiny_artifact)!r}, 'cpu')\n"
        "from export.cli import parity_images\n"
        "ids = c.generate_ids(c.preprocess(parity_images([], 2, seed=1)))\n"
        "print(json.dumps({m: m in sys.modules for m in ('torch._dynamo', 'torch._export.serde.serialize',"
        " 'torch.export.pt2_archive')}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "torch._dynamo": False, "torch._export.serde.serialize": False, "torch.export.pt2_archive": False}


def _edit(entry: Path, change) -> None:
    data = json.loads(entry.read_text())
    change(data)
    entry.write_text(json.dumps(data))


def _first_call(data: dict) -> dict:
    return next(n for n in data["programs"]["encoder"]["nodes"] if n["op"] == "call_function")


@pytest.mark.parametrize("damage", ["cut short", "code as a target", "other torch", "weights past the end",
                                    "unknown value kind"])
def test_a_damaged_or_edited_entry_runs_nothing_and_is_written_again(damage, tiny_artifact, tmp_path, monkeypatch,
                                                                     older_artifact):
    sha = file_sha256(tiny_artifact)
    load_programs(tiny_artifact, CPU, cache_dir=tmp_path, sha256=sha)
    entry = _entry(tmp_path)
    good = entry.read_text()
    ran = []
    monkeypatch.setattr(os, "system", lambda *a: ran.append(a))
    if damage == "cut short":
        entry.write_text(good[: len(good) // 2])
    elif damage == "code as a target":
        _edit(entry, lambda d: _first_call(d).update(target="os.system", args=["echo pwned"]))
    elif damage == "other torch":
        _edit(entry, lambda d: d.update(torch="1.0.0"))
    elif damage == "weights past the end":
        _edit(entry, lambda d: next(iter(d["programs"]["encoder"]["weights"].values())).update(
            offset=tiny_artifact.stat().st_size - 10))
    else:
        _edit(entry, lambda d: _first_call(d).update(args=[{"eval": "print(1)"}]))
    with pytest.warns(UserWarning, match="graph description not used"):
        assert graph_cache.load(entry, tiny_artifact, CPU) is None
    assert not ran
    calls = []
    real = graph_cache.save
    monkeypatch.setattr(graph_cache, "save", lambda *a: calls.append(1) or real(*a))
    with pytest.warns(UserWarning, match="graph description not used .* loading through torch"):
        load_programs(tiny_artifact, CPU, cache_dir=tmp_path, sha256=sha)  # the slow path, which writes it again
    assert calls and entry.read_text() == good


def test_a_program_it_cannot_describe_gets_no_entry_and_a_warning(tiny_artifact, tmp_path, monkeypatch,
                                                                   older_artifact):
    sha = file_sha256(tiny_artifact)
    modules = _torch_loaded(tiny_artifact)
    node = next(n for n in modules["encoder"].graph.nodes if n.op == "call_function")
    node.target = math.fsum  # a Python function: the format keeps aten ops and the operator module only
    path = graph_cache.cache_file(tmp_path, sha, CPU)
    reason = graph_cache.save(path, modules, open_archive(tiny_artifact), CPU)
    assert "only aten ops" in reason and not path.exists()
    monkeypatch.setattr(graph_cache, "describe", lambda *a: (_ for _ in ()).throw(graph_format.NotDescribable("x")))
    with pytest.warns(UserWarning, match="graphs not kept in the local cache .x.; it loads through torch each time"):
        load_programs(tiny_artifact, CPU, cache_dir=tmp_path, sha256=sha)
    assert not path.exists()


def test_values_round_trip_exactly():
    values = (1, -0.0, 0.1, math.inf, -math.inf, True, None, "s", [2, 3], (4, (5,)),
              torch.float16, torch.device("cpu"), torch.strided, torch.channels_last)
    decoded = graph_format._decode(json.loads(json.dumps(graph_format._encode(values))), {})
    assert decoded == values and [type(v) for v in decoded] == [type(v) for v in values]
    assert math.copysign(1, decoded[1]) == -1
    nan = graph_format._decode(json.loads(json.dumps(graph_format._encode(math.nan))), {})
    assert math.isnan(nan)


def test_the_entry_is_keyed_by_file_torch_and_device(tmp_path, monkeypatch):
    a = graph_cache.cache_file(tmp_path, "a" * 64, CPU)
    assert a != graph_cache.cache_file(tmp_path, "b" * 64, CPU)
    assert a != graph_cache.cache_file(tmp_path, "a" * 64, torch.device("cuda", 0))
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert a != graph_cache.cache_file(tmp_path, "a" * 64, CPU)
    assert graph_cache.cache_file(None, "a" * 64, CPU) is None and graph_cache.cache_file(tmp_path, None, CPU) is None


def test_the_agent_loads_with_its_local_cache():
    config = AgentConfig(artifacts_bucket="a", images_bucket="i", queue_url="q", cache_dir="/var/cache/ck")
    assert backend_options(config, s3=None) == {"cache_dir": "/var/cache/ck"}  # quantize only when set
    assert backend_options(AgentConfig(cache_dir="c", quantize="int8"), s3=None) == {"cache_dir": "c", "quantize": "int8"}


@pytest.mark.parametrize("trouble", ["not describable", "torch loads another graph"])
def test_an_export_whose_programs_cannot_be_described_faithfully_leaves_the_description_out(
        trouble, tiny_vit_gpt2_dir, tmp_path, monkeypatch, capsys):
    from export.cli import main

    if trouble == "not describable":
        monkeypatch.setattr(graph_cache, "for_archive",
                            lambda path: (_ for _ in ()).throw(graph_format.NotDescribable("a custom op")))
    else:
        monkeypatch.setattr(graph_cache, "matches", lambda path, text: False)
    out = tmp_path / "m.pt2"
    assert main(["--model", str(tiny_vit_gpt2_dir), "--out", str(out), "--max-batch", "2"]) == 0
    log = capsys.readouterr().err
    assert ("not described (a custom op)" if trouble == "not describable" else "left out") in log
    reader = open_archive(out)
    assert not reader.has_record("extra/graphs.json")
    assert "graphs_sha256" not in json.loads(reader.read_string("extra/manifest.json"))


def test_cache_files_are_written_whole_or_not_at_all(tmp_path):
    from runtime.cache_write import write_whole

    target = tmp_path / "graphs" / "entry.json"
    assert write_whole(target, lambda partial: partial.write_text("whole")) is None
    assert target.read_text() == "whole" and [p.name for p in target.parent.iterdir()] == ["entry.json"]

    def fails(partial):
        partial.write_text("half")
        raise OSError("disk full")
    assert isinstance(write_whole(target, fails), OSError) and target.read_text() == "whole"
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert isinstance(write_whole(blocked / "sub" / "x.json", lambda p: p.write_text("x")), OSError)

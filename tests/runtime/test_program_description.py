"""Programs rebuilt from the description inside the artifact: the very graphs, weights and tokens torch's loader
gives, moved to a device as torch's pass moves them, with no torch deserializer imported."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import fx

from export.cli import parity_images
from runtime.agent.config import AgentConfig
from runtime.agent.model.pointer import backend_options
from runtime.artifact import describe, graphs
from runtime.artifact.archive import open_archive
from runtime.artifact.pt2 import load_pt2
from runtime.artifact.verify import check_artifact
from runtime.backends.exported import load_programs
from runtime.captioner import load_captioner
from runtime.options import LoadOptions
from runtime.passes.linears import attr

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[2]


def _torch_loaded(artifact: Path) -> dict:
    """Programs through torch's loader: safe here only because the test session exported this very file."""
    programs = load_pt2(str(artifact)).exported_programs
    return {name: programs[name].module() for name in ("encoder", "decoder_step")}


def _shape_of(gm: fx.GraphModule) -> list:
    """The graph as calls: op, target and arguments, nodes by position and weights by their values' identity;
    names left out (the rebuild generates its own), export's no-op guard call left out."""
    index, weights, out = {}, {}, []
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == describe.GUARDS:
            continue
        index[node] = len(index)
        args = fx.node.map_arg((node.args, node.kwargs), lambda n: ("node", index[n]))
        if node.op == "get_attr":
            target = weights.setdefault(id(attr(gm, node.target)), len(weights))
        elif node.op == "call_function":
            target = "mul" if node.target in (graphs._int_mul, __import__("operator").mul) else str(node.target)
        else:
            target = node.op
        out.append((node.op, target, repr(args)))
    return out


def _weights(gm: fx.GraphModule) -> list[torch.Tensor]:
    seen = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            seen.setdefault(node.target, attr(gm, node.target))
    return list(seen.values())


def _same_programs(described: dict, loaded: dict) -> None:
    for name in loaded:
        assert _shape_of(described[name]) == _shape_of(loaded[name])
        a, b = _weights(loaded[name]), _weights(described[name])
        assert len(a) == len(b)
        pointer = lambda t: t.untyped_storage().data_ptr()  # noqa: E731
        shared = lambda ws: [[j for j, v in enumerate(ws) if pointer(v) == pointer(w)] for w in ws]  # noqa: E731
        assert shared(a) == shared(b)  # tied weights stay tied
        for x, y in zip(a, b):
            assert (y.dtype, y.shape, y.stride(), type(y), y.requires_grad) == (
                x.dtype,
                x.shape,
                x.stride(),
                type(x),
                x.requires_grad,
            )
            assert torch.equal(x, y)


def strip(shape):
    return [(op, target, args) for op, target, args in shape if op != "get_attr"]


@pytest.mark.parametrize(
    "family", ["tiny_artifact", "tiny_trocr_artifact", "tiny_blip_artifact", "tiny_florence2_artifact"]
)
def test_an_exported_artifact_rebuilds_to_torchs_graphs_weights_and_tokens(family, request, monkeypatch):
    artifact = request.getfixturevalue(family)
    loaded = _torch_loaded(artifact)
    import runtime.artifact.pt2

    monkeypatch.setattr(runtime.artifact.pt2, "load_pt2", lambda *a, **k: pytest.fail("loaded through torch"))
    described = load_programs(artifact, CPU)
    _same_programs(described, loaded)
    captioner = load_captioner(artifact, "cpu")
    assert {"integrity_s", "weights_s", "programs_s", "graph_passes_s"} <= set(captioner.load_phases)
    reference = copy.copy(captioner)
    reference.encoder, reference.step = loaded["encoder"], loaded["decoder_step"]
    from runtime.passes.decode_layout import apply_decode_layout

    apply_decode_layout(reference.step)
    pixels = reference.preprocess(parity_images([], 3, seed=5))
    for beams in sorted({1, reference.max_beams}):
        assert captioner.generate_ids(pixels, beams) == reference.generate_ids(pixels, beams)


def test_every_family_stays_inside_the_allow_list(
    tiny_artifact, tiny_trocr_artifact, tiny_blip_artifact, tiny_florence2_artifact
):
    from runtime.artifact.allowed_ops import ALLOWED_OPS

    used = set()
    for artifact in (tiny_artifact, tiny_trocr_artifact, tiny_blip_artifact, tiny_florence2_artifact):
        for gm in _torch_loaded(artifact).values():
            used |= {
                str(n.target)
                for n in gm.graph.nodes
                if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
            }
    assert used <= ALLOWED_OPS, sorted(used - ALLOWED_OPS)
    assert not {"aten.from_file.default", "aten.set_.source_Storage", "aten._local_scalar_dense.default"} & ALLOWED_OPS


def test_the_device_move_of_a_cpu_description_is_torchs_move_to_device_pass(tiny_artifact):
    from torch.export.passes import move_to_device_pass

    meta = torch.device("meta")  # any device torch can move a program to; the graphs are compared, not run
    programs = load_pt2(str(tiny_artifact)).exported_programs
    checked = check_artifact(tiny_artifact).programs
    for name, program in checked.items():
        by_torch = move_to_device_pass(programs[name], meta).module()
        ours = fx.GraphModule({t: torch.empty(0) for t in program.weights}, graphs.on_device(program.graph, meta))
        plain = fx.GraphModule({t: torch.empty(0) for t in program.weights}, program.graph)
        assert strip(_shape_of(ours)) == strip(_shape_of(by_torch))
        assert strip(_shape_of(ours)) != strip(_shape_of(plain))  # something was moved


def test_the_first_load_never_imports_torchs_export_deserializer_or_dynamo(tiny_artifact):
    probe = (
        "import sys, json\n"
        "from runtime.captioner import load_captioner\n"
        f"c = load_captioner({str(tiny_artifact)!r}, 'cpu')\n"
        "import PIL.Image\n"
        "ids = c.generate_ids(c.preprocess([PIL.Image.new('RGB', (40, 30), (9, 90, 200))]))\n"
        "print(json.dumps({m: m in sys.modules for m in ('torch._dynamo', 'torch._export.serde.serialize',"
        " 'torch.export.pt2_archive')}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "torch._dynamo": False,
        "torch._export.serde.serialize": False,
        "torch.export.pt2_archive": False,
    }


def test_values_round_trip_exactly():
    values = (
        1,
        -0.0,
        0.1,
        math.inf,
        -math.inf,
        True,
        None,
        "s",
        [2, 3],
        (4, (5,)),
        torch.float16,
        torch.device("cpu"),
        torch.strided,
        torch.channels_last,
    )
    decode = graphs._Values("test", {})
    decoded = decode(json.loads(json.dumps(describe._encode(values))))
    assert decoded == values and [type(v) for v in decoded] == [type(v) for v in values]
    assert math.copysign(1, decoded[1]) == -1
    assert math.isnan(decode(json.loads(json.dumps(describe._encode(math.nan)))))


def test_size_arithmetic_refuses_runaway_integers():
    assert graphs._int_mul(3, 4) == 12
    with pytest.raises(OverflowError):
        graphs._int_mul(1 << 40, 1 << 40)
    with pytest.raises(TypeError):
        graphs._int_mul((1,), 1 << 30)  # a tuple repeated a billion times is memory, not arithmetic


def test_the_agent_loads_with_its_local_cache():
    config = AgentConfig(artifacts_bucket="a", images_bucket="i", queue_url="q", cache_dir="/var/cache/ck")
    assert backend_options(config, s3=None) == {"cache_dir": "/var/cache/ck", "options": LoadOptions()}
    assert backend_options(AgentConfig(cache_dir="c", quantize="int8"), s3=None) == {
        "cache_dir": "c",
        "options": LoadOptions(quantize="int8"),
    }


@pytest.mark.parametrize("trouble", ["not describable", "torch loads another graph"])
def test_an_export_whose_programs_cannot_be_described_faithfully_writes_nothing(
    trouble, tiny_vit_gpt2_dir, tmp_path, monkeypatch, capsys
):
    from export import archive
    from export.cli import main

    real = archive._description
    if trouble == "not describable":
        monkeypatch.setattr(
            archive, "_description", lambda path: (_ for _ in ()).throw(describe.NotDescribable("a custom op"))
        )
    else:
        calls = []
        monkeypatch.setattr(
            archive, "_description", lambda path: real(path) + ("x" if calls.append(1) or len(calls) > 1 else "")
        )
    out = tmp_path / "m.pt2"
    assert main(["--model", str(tiny_vit_gpt2_dir), "--out", str(out), "--max-batch", "2"]) == 1
    log = capsys.readouterr().err
    assert ("a custom op" if trouble == "not describable" else "another graph than described") in log
    assert not out.exists()


def test_cache_files_are_written_whole_or_not_at_all(tmp_path):
    from runtime.cache import write_whole

    target = tmp_path / "verified" / "entry.json"
    assert write_whole(target, lambda partial: partial.write_text("whole")) is None
    assert target.read_text() == "whole" and [p.name for p in target.parent.iterdir()] == ["entry.json"]

    def fails(partial):
        partial.write_text("half")
        raise OSError("disk full")

    assert isinstance(write_whole(target, fails), OSError) and target.read_text() == "whole"
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert isinstance(write_whole(blocked / "sub" / "x.json", lambda p: p.write_text("x")), OSError)


def test_the_archive_reader_finds_every_record_where_torchs_reader_does(tiny_artifact):
    reader, theirs = open_archive(tiny_artifact), torch._C.PyTorchFileReader(str(tiny_artifact))
    for name in reader.names():
        assert reader.region(name) == (theirs.get_record_offset(name), theirs.get_record_size(name)), name


def test_every_family_keeps_the_runtimes_program_contract(
    tiny_artifact, tiny_trocr_artifact, tiny_blip_artifact, tiny_florence2_artifact, tiny_qwen2_vl_artifact
):
    from runtime.artifact.verify import verify

    for artifact in (
        tiny_artifact,
        tiny_trocr_artifact,
        tiny_blip_artifact,
        tiny_florence2_artifact,
        tiny_qwen2_vl_artifact,
    ):
        verify(artifact)  # counts at load; dtype, rank and batch dimension of every output on meta at both batch ends

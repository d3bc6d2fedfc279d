"""The loaded programs' graphs kept in the local cache, so a restart builds them without torch's deserializer.

`torch.export` loading spends most of its time outside the weights: importing its schema code (which pulls in
`torch._dynamo`), turning the JSON schema into dataclasses, building a fake tensor and re-parsing sympy
expressions for every graph value (BENCHMARKS.md, issue 16). What the runtime calls afterwards is just the
unlifted module (`ExportedProgram.module()`): a graph of aten calls reading weights by attribute. So the first
load of an artifact writes that graph down in plain JSON, node by node, with each weight's place in the .pt2
(record offset, dtype, size, stride); later loads rebuild the same `fx.GraphModule` from it and read the
weights straight from the file at those offsets, one copy, as torch's reader does.

What makes it safe:
- The key is the artifact's SHA-256 (already checked: stamp or hash), the torch release, the device and this
  format's version, so a cache entry only ever describes the exact bytes and torch that made it.
- The JSON holds no code: call targets are resolved by name among `torch.ops.aten` and the `operator`
  module only, arguments are plain values, dtypes, devices, layouts and memory formats. A damaged or edited
  entry can at worst fail to build, and then the load goes the slow way and writes it again.
- Anything this encoder does not know (another op namespace, a symbolic value, a pickled weight, a custom
  object) means no entry is written: that artifact always loads through torch.
- The rebuilt module runs the same nodes in the same order on the same weights, so the tokens are exactly
  those of the slow path (tests compare graphs and tokens). It drops what the slow path's module carries for
  export's own use: its `_guards_fn` call (a no-op after a load) and the node metadata (fake tensors).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import operator
import os
import time
import warnings
from pathlib import Path

import torch
from torch import fx

from runtime.graph_linears import attr
from runtime.archive import CONSTANTS_CONFIG, CONSTANTS_DIR, WEIGHTS_CONFIG, WEIGHTS_DIR, ArchiveReader

GRAPH_DIR = "graphs"
FORMAT = 1
ENABLED = True  # bench.load_phases turns it off to measure the slow path's own levers
GUARDS = "_guards_fn"  # export's guard module: a no-op `forward(*args): pass` once loaded (torch 2.13)


class NotCacheable(Exception):
    """The program holds something this format does not describe; it is loaded through torch every time."""


def cache_file(cache_dir: str | os.PathLike | None, sha256: str | None, device: torch.device) -> Path | None:
    """`<cache>/graphs/<sha256>-<torch, device, format digest>.json`, or None without a cache dir or SHA-256."""
    if not (ENABLED and cache_dir is not None and sha256):
        return None
    where = hashlib.sha256(f"{torch.__version__}|{device}|{FORMAT}".encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / GRAPH_DIR / f"{sha256}-{where}.json"


# ---- values -------------------------------------------------------------------------------------------------

_KINDS = {torch.dtype: "dtype", torch.device: "device", torch.layout: "layout", torch.memory_format: "memory_format"}


def _encode(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, fx.Node):
        return {"node": value.name}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if type(value) in _KINDS:
        return {_KINDS[type(value)]: str(value).removeprefix("torch.")}
    raise NotCacheable(f"argument of type {type(value).__name__}: {value!r}")


def _decode(value, nodes: dict[str, fx.Node]):
    if isinstance(value, list):
        return [_decode(v, nodes) for v in value]
    if not isinstance(value, dict):
        return value
    (kind, payload), = value.items()
    if kind == "node":
        return nodes[payload]
    if kind == "tuple":
        return tuple(_decode(v, nodes) for v in payload)
    if kind == "device":
        return torch.device(payload)
    if kind in ("dtype", "layout", "memory_format"):
        found = getattr(torch, payload)
        if not isinstance(found, (torch.dtype, torch.layout, torch.memory_format)):
            raise ValueError(f"{kind} {payload!r} is not one")
        return found
    raise ValueError(f"unknown value kind {kind!r}")


def _target_name(target) -> str:
    if isinstance(target, torch._ops.OpOverload) and target.namespace == "aten":
        return str(target)  # "aten.add.Tensor"
    if getattr(operator, getattr(target, "__name__", ""), None) is target:
        return f"operator.{target.__name__}"
    raise NotCacheable(f"call target {target!r} (only aten ops and the operator module are kept)")


def _resolve(name: str):
    module, _, rest = name.partition(".")
    if module == "operator":
        return getattr(operator, rest)
    if module != "aten":
        raise ValueError(f"call target {name!r} outside aten and operator")
    packet, overload = rest.rsplit(".", 1)
    found = getattr(getattr(torch.ops.aten, packet), overload)
    if not isinstance(found, torch._ops.OpOverload):
        raise ValueError(f"{name!r} is not an aten op overload")
    return found


# ---- writing ------------------------------------------------------------------------------------------------

def _graph(gm: fx.GraphModule) -> list[dict]:
    nodes = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == GUARDS and not node.users:
            continue
        entry = {"name": node.name, "op": node.op}
        if node.op == "call_function":
            entry["target"] = _target_name(node.target)
        elif node.op == "get_attr":
            entry["target"] = node.target
        elif node.op not in ("placeholder", "output"):
            raise NotCacheable(f"node {node.name} ({node.op} {node.target})")
        if node.args:
            entry["args"] = _encode(node.args)["tuple"]
        if node.kwargs:
            entry["kwargs"] = {k: _encode(v) for k, v in node.kwargs.items()}
        nodes.append(entry)
    return nodes


def _payloads(reader: ArchiveReader, program: str) -> dict[str, str]:
    """Every weight and tensor constant of `program`: its name in the program -> its record in the archive."""
    found = {}
    for config, folder in ((WEIGHTS_CONFIG, WEIGHTS_DIR), (CONSTANTS_CONFIG, CONSTANTS_DIR)):
        name = config.format(program)
        if not reader.has_record(name):
            continue
        for fqn, meta in json.loads(reader.read_string(name))["config"].items():
            if not meta.get("use_pickle"):
                found[fqn] = folder + meta["path_name"]
    return found


def _weights(gm: fx.GraphModule, reader: ArchiveReader, program: str) -> dict[str, dict]:
    payloads = _payloads(reader, program)
    weights = {}
    for node in gm.graph.nodes:
        if node.op != "get_attr" or node.target in weights:
            continue
        tensor = attr(gm, node.target)
        if not isinstance(tensor, torch.Tensor) or node.target not in payloads:
            raise NotCacheable(f"{node.target}: not a tensor stored in the archive")
        record = payloads[node.target]
        offset, size = reader.region(record)
        if size != tensor.untyped_storage().nbytes() or tensor.layout != torch.strided or tensor.is_quantized:
            raise NotCacheable(f"{node.target}: its storage is not the whole record {record}")
        weights[node.target] = {
            "record": record, "offset": offset, "nbytes": size, "dtype": str(tensor.dtype).removeprefix("torch."),
            "size": list(tensor.shape), "stride": list(tensor.stride()), "storage_offset": tensor.storage_offset(),
            "parameter": isinstance(tensor, torch.nn.Parameter), "requires_grad": tensor.requires_grad,
        }
    return weights


def describe(modules: dict[str, fx.GraphModule], reader: ArchiveReader) -> dict:
    """The cache entry for loaded programs (raises NotCacheable)."""
    programs = {}
    for name, gm in modules.items():
        info = getattr(gm.graph._codegen, "pytree_info", None)
        if info is not None and not _flat_tuple(info.out_spec):
            raise NotCacheable(f"{name}: its outputs are not a flat tuple")
        programs[name] = {"nodes": _graph(gm), "weights": _weights(gm, reader, name)}
    return {"format": FORMAT, "torch": torch.__version__, "programs": programs}


def _flat_tuple(spec) -> bool:
    return spec.type is tuple and all(child.is_leaf() for child in spec.children())


def save(path: Path | None, modules: dict[str, fx.GraphModule], reader: ArchiveReader) -> str | None:
    """Write the entry for `modules` (best effort). Returns why nothing was written, or None."""
    if path is None:
        return "no cache"
    try:
        entry = describe(modules, reader)
    except NotCacheable as exc:
        return str(exc)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(entry, separators=(",", ":")))
        partial.replace(path)
    except OSError as exc:
        return f"cache not writable: {exc}"
    return None


# ---- reading ------------------------------------------------------------------------------------------------

def _read_weights(artifact: Path, weights: dict[str, dict], device: torch.device) -> dict[str, torch.Tensor]:
    storages: dict[str, torch.Tensor] = {}
    tensors = {}
    with open(artifact, "rb", buffering=0) as f:
        for target, w in weights.items():
            flat = storages.get(w["record"])
            if flat is None:  # tied weights share one record and one storage, as torch's reader keeps them
                flat = torch.empty(w["nbytes"], dtype=torch.uint8)
                view = memoryview((ctypes.c_char * w["nbytes"]).from_address(flat.data_ptr())).cast("B")
                f.seek(w["offset"])
                done = 0
                while done < w["nbytes"]:
                    n = f.readinto(view[done:])
                    if not n:
                        raise ValueError(f"{artifact}: ends inside record {w['record']}")
                    done += n
                storages[w["record"]] = flat
            dtype = getattr(torch, w["dtype"])
            tensor = flat.view(dtype).as_strided(w["size"], w["stride"], w["storage_offset"])
            if device.type != "cpu":
                tensor = tensor.to(device)
            tensors[target] = (torch.nn.Parameter(tensor, requires_grad=w["requires_grad"]) if w["parameter"]
                               else tensor.requires_grad_(w["requires_grad"]))
    return tensors


def _build(nodes: list[dict], weights: dict[str, torch.Tensor], name: str) -> fx.GraphModule:
    graph = fx.Graph()
    built: dict[str, fx.Node] = {}
    for entry in nodes:
        op = entry["op"]
        args = tuple(_decode(entry.get("args", []), built))
        kwargs = {k: _decode(v, built) for k, v in entry.get("kwargs", {}).items()}
        if op == "placeholder":
            node = graph.placeholder(entry["name"])
        elif op == "get_attr":
            node = graph.get_attr(entry["target"])
        elif op == "call_function":
            node = graph.create_node("call_function", _resolve(entry["target"]), args, kwargs, name=entry["name"])
        elif op == "output":
            node = graph.output(args[0])
        else:
            raise ValueError(f"node op {op!r}")
        built[entry["name"]] = node
    return fx.GraphModule(weights, graph, class_name=name)


def load(path: Path | None, artifact: Path, device: torch.device,
         timings: dict | None = None) -> dict[str, fx.GraphModule] | None:
    """The programs rebuilt from the entry at `path`, or None when there is none (or it cannot be used).
    `timings` receives `weights_s`, the seconds spent reading weights."""
    if path is None or not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text())
        if entry["format"] != FORMAT or entry["torch"] != torch.__version__:
            raise ValueError(f"made for format {entry['format']}, torch {entry['torch']}")
        modules, weights_s = {}, 0.0
        for name, program in entry["programs"].items():
            start = time.perf_counter()
            weights = _read_weights(artifact, program["weights"], device)
            weights_s += time.perf_counter() - start
            modules[name] = _build(program["nodes"], weights, name)
    except Exception as exc:  # damaged or edited: the slow path loads it and writes the entry again
        warnings.warn(f"{path}: graph cache entry not used ({type(exc).__name__}: {str(exc)[:200]}); "
                      "loading through torch and writing it again", stacklevel=3)
        return None
    if timings is not None:
        timings["weights_s"] = round(weights_s, 3)
    return modules

"""The graph format of runtime.graph_cache: loaded programs written down as plain JSON, and rebuilt from it.

A program as the runtime calls it is the unlifted module of an `ExportedProgram` (`.module()`): a graph of aten
calls reading weights by attribute. `describe` writes it node by node (each call's aten op by name, its
arguments as plain values) with each weight's place in the .pt2 (record, dtype, size, stride, and the record's
file offset where the entry is for one file's bytes); `rebuild` makes the same `fx.GraphModule`s again and
reads each weight straight from the file, one copy per record, tied weights sharing one storage.

The JSON holds no code: call targets are resolved by name among `torch.ops.aten` and the `operator` module
only, arguments are plain values, dtypes, devices, layouts and memory formats. A damaged or edited description
can at worst fail to build. Anything this format does not know (another op namespace, a Python function, a
symbolic value, a pickled weight, a storage that is not a whole record) raises `NotDescribable`. The rebuilt
module runs the same nodes in the same order on the same weights, so its tokens are the torch loader's; it
leaves out what that module carries for export's own use: the `_guards_fn` call (a no-op after a load,
torch 2.13) and the node metadata (fake tensors).
"""
from __future__ import annotations

import ctypes
import json
import operator
import time
from pathlib import Path

import torch
from torch import fx

from runtime.archive import CONSTANTS_CONFIG, CONSTANTS_DIR, WEIGHTS_CONFIG, WEIGHTS_DIR, ArchiveReader
from runtime.graph_linears import attr

FORMAT = 1
GUARDS = "_guards_fn"  # export's guard module: a no-op `forward(*args): pass` once loaded (torch 2.13)


class NotDescribable(Exception):
    """The program holds something this format does not describe; it is loaded through torch every time."""


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
    raise NotDescribable(f"argument of type {type(value).__name__}: {value!r}")


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
    raise NotDescribable(f"call target {target!r} (only aten ops and the operator module are kept)")


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
            raise NotDescribable(f"node {node.name} ({node.op} {node.target})")
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


def _weights(gm: fx.GraphModule, reader: ArchiveReader, program: str, offsets: bool) -> dict[str, dict]:
    payloads = _payloads(reader, program)
    weights = {}
    for node in gm.graph.nodes:
        if node.op != "get_attr" or node.target in weights:
            continue
        tensor = attr(gm, node.target)
        if not isinstance(tensor, torch.Tensor) or node.target not in payloads:
            raise NotDescribable(f"{node.target}: not a tensor stored in the archive")
        record = payloads[node.target]
        offset, size = reader.region(record)
        if size != tensor.untyped_storage().nbytes() or tensor.layout != torch.strided or tensor.is_quantized:
            raise NotDescribable(f"{node.target}: its storage is not the whole record {record}")
        weights[node.target] = {
            "record": record, **({"offset": offset} if offsets else {}), "nbytes": size,
            "dtype": str(tensor.dtype).removeprefix("torch."), "size": list(tensor.shape), "stride": list(tensor.stride()), "storage_offset": tensor.storage_offset(),
            "parameter": isinstance(tensor, torch.nn.Parameter), "requires_grad": tensor.requires_grad,
        }
    return weights


def describe(modules: dict[str, fx.GraphModule], reader: ArchiveReader, device: torch.device,
             offsets: bool = True) -> dict:
    """The description of programs loaded from `reader`'s archive onto `device` (raises NotDescribable).
    Without `offsets`, weights are found by record name when rebuilt (a description kept inside the archive)."""
    programs = {}
    for name, gm in modules.items():
        info = getattr(gm.graph._codegen, "pytree_info", None)
        if info is not None and not _flat_tuple(info.out_spec):
            raise NotDescribable(f"{name}: its outputs are not a flat tuple")
        programs[name] = {"nodes": _graph(gm), "weights": _weights(gm, reader, name, offsets)}
    return {"format": FORMAT, "torch": torch.__version__, "device": str(device), "programs": programs}


def dumps(description: dict) -> str:
    return json.dumps(description, separators=(",", ":"))


def _flat_tuple(spec) -> bool:
    return spec.type is tuple and all(child.is_leaf() for child in spec.children())


# ---- reading ------------------------------------------------------------------------------------------------

def _offset(w: dict, reader: ArchiveReader | None) -> int:
    if "offset" in w:
        return w["offset"]
    offset, size = reader.region(w["record"])
    if size != w["nbytes"]:
        raise ValueError(f"record {w['record']} holds {size} bytes, the description says {w['nbytes']}")
    return offset


def _read_weights(artifact: Path, weights: dict[str, dict], device: torch.device,
                  reader: ArchiveReader | None) -> dict[str, torch.Tensor]:
    storages: dict[str, torch.Tensor] = {}
    tensors = {}
    with open(artifact, "rb", buffering=0) as f:
        for target, w in weights.items():
            flat = storages.get(w["record"])
            if flat is None:  # tied weights share one record and one storage, as torch's reader keeps them
                flat = torch.empty(w["nbytes"], dtype=torch.uint8)
                view = memoryview((ctypes.c_char * w["nbytes"]).from_address(flat.data_ptr())).cast("B")
                f.seek(_offset(w, reader))
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


def _moved(nodes: list[dict], device: torch.device) -> list[dict]:
    """The nodes as `torch.export.passes.move_to_device_pass(ep, device)` leaves them (torch 2.13, read for this):
    every `device` keyword and the device argument of `aten.to.device` set to the device's name."""
    name, out = str(device), []
    for entry in nodes:
        entry = dict(entry)
        if "device" in entry.get("kwargs", {}):
            entry["kwargs"] = {**entry["kwargs"], "device": name}
        if entry["op"] == "call_function" and entry.get("target") == "aten.to.device":
            entry["args"] = [entry["args"][0], name, *entry["args"][2:]]
        out.append(entry)
    return out


def rebuild(description: dict, artifact: Path, device: torch.device, reader: ArchiveReader | None = None,
            timings: dict | None = None) -> dict[str, fx.GraphModule]:
    """The programs of `description` on `device`, weights read from `artifact` (raises on anything amiss).
    A description made on the CPU is moved as torch's device pass would; `reader` finds records without offsets.
    `timings` receives `weights_s`, the seconds spent reading weights."""
    if description["format"] != FORMAT:
        raise ValueError(f"description format {description['format']}, this runtime reads {FORMAT}")
    made_on = torch.device(description["device"])
    if made_on != device and made_on.type != "cpu":
        raise ValueError(f"described on {made_on}, asked for {device}")
    modules, weights_s = {}, 0.0
    for name, program in description["programs"].items():
        start = time.perf_counter()
        weights = _read_weights(artifact, program["weights"], device, reader)
        weights_s += time.perf_counter() - start
        nodes = program["nodes"] if made_on == device else _moved(program["nodes"], device)
        modules[name] = _build(nodes, weights, name)
    if timings is not None:
        timings["weights_s"] = round(weights_s, 3)
    return modules

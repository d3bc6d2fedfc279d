"""Write loaded programs down as the description `extra/graphs.json` holds (the exporter, on programs it has just made).

Each call's aten op by name and its arguments as plain values, each weight by its record, dtype, size and stride;
anything the format does not hold raises NotDescribable, and so does an op outside the allow-list
(runtime.artifact.allowed_ops), so an export never writes what the runtime would refuse.
"""

from __future__ import annotations

import json
import operator

import torch
from torch import fx

from runtime.artifact import graphs
from runtime.artifact.archive import CONSTANTS_CONFIG, CONSTANTS_DIR, WEIGHTS_CONFIG, WEIGHTS_DIR, ArchiveReader
from runtime.artifact.contract import check_signature
from runtime.artifact.graphs import FORMAT, attr
from runtime.errors import BadDescription, NotDescribable

GUARDS = "_guards_fn"  # export's guard module: a no-op `forward(*args): pass` once loaded (torch 2.13)
MAX_CONFIG_BYTES = 16 << 20  # a program's weights config (JSON)

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


def _target_name(target) -> str:
    if isinstance(target, torch._ops.OpOverload) and target.namespace == "aten":
        name = str(target)  # "aten.add.Tensor"
    elif getattr(operator, getattr(target, "__name__", ""), None) is target:
        name = f"operator.{target.__name__}"
    else:
        raise NotDescribable(f"call target {target!r} (only aten ops and the operator module are kept)")
    if name not in graphs.ALLOWED_OPS and name not in graphs.OPERATOR:
        raise NotDescribable(
            f"call target {name} is not in runtime/artifact/allowed_ops.py: add it there on purpose "
            "(after checking it reads no file, memory or Python object), with the family's test"
        )
    return name


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
        for fqn, meta in json.loads(reader.read_string(name, MAX_CONFIG_BYTES))["config"].items():
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
            raise NotDescribable(f"{node.target}: not a tensor stored in the archive")
        record = payloads[node.target]
        _, size = reader.region(record)
        if size != tensor.untyped_storage().nbytes() or tensor.layout != torch.strided or tensor.is_quantized:
            raise NotDescribable(f"{node.target}: its storage is not the whole record {record}")
        weights[node.target] = {
            "record": record,
            "nbytes": size,
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "size": list(tensor.shape),
            "stride": list(tensor.stride()),
            "storage_offset": tensor.storage_offset(),
            "parameter": isinstance(tensor, torch.nn.Parameter),
            "requires_grad": tensor.requires_grad,
        }
    return weights


def describe(modules: dict[str, fx.GraphModule], reader: ArchiveReader, device: torch.device) -> dict:
    """The description of programs loaded from `reader`'s archive onto `device` (raises NotDescribable)."""
    programs = {}
    for name, gm in modules.items():
        info = getattr(gm.graph._codegen, "pytree_info", None)
        if info is not None and not _flat_tuple(info.out_spec):
            raise NotDescribable(f"{name}: its outputs are not a flat tuple")
        nodes = _graph(gm)
        try:  # an export never writes what every load refuses
            check_signature(
                name,
                sum(1 for node in nodes if node["op"] == "placeholder"),
                len(nodes[-1]["args"][0]["tuple"] if type(nodes[-1]["args"][0]) is dict else nodes[-1]["args"][0]),
            )
        except BadDescription as exc:
            raise NotDescribable(str(exc)) from None
        programs[name] = {"nodes": nodes, "weights": _weights(gm, reader, name)}
    return {"format": FORMAT, "torch": torch.__version__, "device": str(device), "programs": programs}


def dumps(description: dict) -> str:
    return json.dumps(description, separators=(",", ":"))


def _flat_tuple(spec) -> bool:
    return spec.type is tuple and all(child.is_leaf() for child in spec.children())

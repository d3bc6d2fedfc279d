"""The programs' description (`extra/graphs.json`) read back: checked as untrusted data, then rebuilt.

A program as the runtime calls it is the unlifted module of an `ExportedProgram` (`.module()`): a graph of aten
calls reading weights by attribute. runtime.artifact.describe writes it down; `rebuild` makes the same graph
again and reads each weight straight from the file, one copy per record, tied weights sharing one storage;
runtime.artifact.sizes sizes its intermediates on the meta device.

The description is untrusted input (an edited archive recomputes its own checksums), so `check` reads it as data
only, before anything reaches torch.fx: call targets come from the allow-list in `runtime.artifact.allowed_ops` (and
nothing that reaches files, raw memory or Python objects is on it); keyword names must be the op's own schema
arguments; values are plain numbers, short identifier strings, dtypes, devices, layouts and memory formats from
fixed tables; every node, placeholder and attribute gets a name generated here (fx pastes names into the source
of `forward`); every weight's extent must lie inside its record. The rebuilt module runs the same nodes in the
same order on the same weights as torch's loader would, without the `_guards_fn` call (a no-op once loaded) and
the node metadata (fake tensors).
"""

from __future__ import annotations

import ctypes
import operator
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import fx

from runtime.artifact.allowed_ops import ALLOWED_OPS
from runtime.artifact.archive import CONSTANTS_DIR, WEIGHTS_DIR, ArchiveReader
from runtime.artifact.contract import check_signature
from runtime.artifact.manifest import PROGRAMS
from runtime.errors import BadDescription

FORMAT = 1
MAX_NODES = 200_000
MAX_ITEMS = 1_000_000  # values in all arguments of a program, nested lists included
MAX_DEPTH = 8
MAX_DIMS = 16
INT64 = 1 << 63
MAX_ELEMENTS = 1 << 31  # constant sizes an op may allocate by: a 2**31-element tensor is past any captioner's
SIZE_ARGUMENTS = {  # the allowed ops that allocate by an argument: which positions hold sizes
    "aten.zeros.default": (0,),
    "aten.arange.default": (0,),
    "aten.arange.start": (0, 1),
    "aten.expand.default": (1,),
    "aten.repeat.default": (1,),
    "aten.pad.default": (1,),
}

DTYPES = {
    name: getattr(torch, name)
    for name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
}
LAYOUTS = {"strided": torch.strided}
MEMORY_FORMATS = {
    "contiguous_format": torch.contiguous_format,
    "preserve_format": torch.preserve_format,
    "channels_last": torch.channels_last,
}
_DEVICE = re.compile(r"(cpu|cuda)(:[0-9]{1,2})?")
_STRING = re.compile(r"[A-Za-z0-9_]{0,32}")


def _int_mul(a, b):
    """`operator.mul` on the symbolic sizes export emits, refusing results outside int64 (no runaway integers)."""
    if not all(isinstance(v, (int, torch.SymInt)) and type(v) is not bool for v in (a, b)):
        raise TypeError(f"size arithmetic on {type(a).__name__} and {type(b).__name__}, not integers")
    product = a * b
    if type(product) is int and not -INT64 <= product < INT64:
        raise OverflowError(f"size arithmetic {a} * {b} leaves int64")
    return product


OPERATOR = {"operator.getitem": operator.getitem, "operator.mul": _int_mul}  # all that export emits for them


def attr(module: torch.nn.Module, target: str):
    """The object (a weight, a submodule) at a dotted get_attr target."""
    for part in target.split("."):
        module = getattr(module, part)
    return module


# ---- checking (everything a description holds, before fx or torch sees any of it) -------------------------------


@dataclass
class Weight:
    """One checked weight: its record's range in the file and the tensor to view it as."""

    record: str
    offset: int
    nbytes: int
    dtype: torch.dtype
    size: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int
    parameter: bool
    requires_grad: bool


@dataclass
class Program:
    """One checked program: its graph (generated names, allowed targets) and its weights by attribute name."""

    graph: fx.Graph
    weights: dict[str, Weight]


def fail(where: str, why: str):
    raise BadDescription(f"{where}: {why}")


def _int(value, where: str, low: int = -INT64, high: int = INT64 - 1) -> int:
    if type(value) is not int or not low <= value <= high:
        fail(where, f"{value!r} is not an integer in [{low}, {high}]")
    return value


class _Values:
    """Turns JSON argument values into fx arguments; counts what it reads so a huge argument is refused early."""

    def __init__(self, where: str, nodes: dict[str, fx.Node]):
        self.where, self.nodes, self.items = where, nodes, 0

    def __call__(self, value, depth: int = 0):
        self.items += 1
        if self.items > MAX_ITEMS or depth > MAX_DEPTH:
            fail(self.where, f"arguments nested deeper than {MAX_DEPTH} or over {MAX_ITEMS} values")
        if value is None or type(value) is bool:
            return value
        if type(value) is int:
            return _int(value, self.where)
        if type(value) is float:
            return value  # json gives finite floats, inf and nan only: all plain numbers in fx's source
        if type(value) is str:
            if not _STRING.fullmatch(value):
                fail(self.where, f"string argument {value[:40]!r} is not a short identifier")
            return value
        if type(value) is list:
            return [self(v, depth + 1) for v in value]
        if type(value) is not dict or len(value) != 1:
            fail(self.where, f"a value of type {type(value).__name__} is not one this format writes")
        ((kind, payload),) = value.items()
        if kind == "tuple" and type(payload) is list:
            return tuple(self(v, depth + 1) for v in payload)
        if kind == "node" and payload in self.nodes:
            return self.nodes[payload]
        if kind == "device" and type(payload) is str and _DEVICE.fullmatch(payload):
            return torch.device(payload)
        table = {"dtype": DTYPES, "layout": LAYOUTS, "memory_format": MEMORY_FORMATS}.get(kind, {})
        if type(payload) is str and payload in table:
            return table[payload]
        fail(self.where, f"{kind} {str(payload)[:40]!r} is not a known {kind} or an earlier node")


def _target(name, where: str, args: tuple, kwargs: dict):
    if name in OPERATOR:
        if kwargs or len(args) != 2 or not all(isinstance(a, fx.Node) or type(a) is int for a in args):
            fail(where, f"{name} takes two positional arguments, earlier nodes or integers")
        return OPERATOR[name]
    if name not in ALLOWED_OPS:
        fail(where, f"call target {str(name)[:80]!r} is not on the allow-list (runtime/artifact/allowed_ops.py)")
    packet, overload = name.removeprefix("aten.").rsplit(".", 1)
    op = getattr(getattr(torch.ops.aten, packet), overload)
    arguments = op._schema.arguments
    if len(args) > len(arguments):
        fail(where, f"{name} takes at most {len(arguments)} arguments, given {len(args)}")
    allowed = {a.name for a in arguments[len(args) :]}
    if not set(kwargs) <= allowed:
        fail(where, f"{name} has no keyword argument {sorted(set(kwargs) - allowed)[0][:40]!r}")
    elements = 1
    for i in SIZE_ARGUMENTS.get(name, ()):
        value = args[i] if i < len(args) else kwargs.get(arguments[i].name)
        for n in value if isinstance(value, (list, tuple)) else [value]:
            elements *= abs(n) if type(n) is int and n > 0 else 1
    if elements > MAX_ELEMENTS:
        fail(where, f"{name} would allocate {elements} elements (at most {MAX_ELEMENTS} by constant sizes)")
    return op


def _weight(meta, where: str, reader: ArchiveReader) -> Weight:
    keys = {"record", "nbytes", "dtype", "size", "stride", "storage_offset", "parameter", "requires_grad"}
    if type(meta) is not dict or set(meta) != keys:
        fail(where, f"a weight entry has the fields {sorted(keys)}")
    record = meta["record"]
    if type(record) is not str or not record.startswith((WEIGHTS_DIR, CONSTANTS_DIR)) or not reader.has_record(record):
        fail(where, f"record {str(record)[:80]!r} is not a weight record of this archive")
    offset, nbytes = reader.region(record)
    if meta["nbytes"] != nbytes:
        fail(where, f"record {record} holds {nbytes} bytes, the description says {meta['nbytes']!r}")
    dtype = DTYPES.get(meta["dtype"]) if type(meta["dtype"]) is str else None
    size, stride = meta["size"], meta["stride"]
    if (
        dtype is None
        or type(size) is not list
        or type(stride) is not list
        or len(size) != len(stride)
        or len(size) > MAX_DIMS
        or type(meta["parameter"]) is not bool
        or type(meta["requires_grad"]) is not bool
    ):
        fail(where, "dtype, size, stride or flags are not a tensor's")
    size = tuple(_int(s, where, 0, INT64 - 1) for s in size)
    stride = tuple(_int(s, where, 0, INT64 - 1) for s in stride)
    start = _int(meta["storage_offset"], where, 0, INT64 - 1)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if all(size):
        end = (start + sum((n - 1) * s for n, s in zip(size, stride)) + 1) * itemsize
        if end > nbytes:
            fail(where, f"its view reaches byte {end} of a {nbytes}-byte record")
    return Weight(record, offset, nbytes, dtype, size, stride, start, meta["parameter"], meta["requires_grad"])


def _program(name: str, program, reader: ArchiveReader) -> Program:
    if (
        type(program) is not dict
        or set(program) != {"nodes", "weights"}
        or type(program["nodes"]) is not list
        or type(program["weights"]) is not dict
        or len(program["nodes"]) > MAX_NODES
    ):
        fail(name, f"a program is {{'nodes': [at most {MAX_NODES}], 'weights': {{...}}}}")
    weights, renamed = {}, {}
    for i, (target, meta) in enumerate(program["weights"].items()):
        renamed[target] = f"w{i}"
        weights[f"w{i}"] = _weight(meta, f"{name} weight {i}", reader)
    graph, built, values = fx.Graph(), {}, _Values(name, {})
    values.nodes = built
    entries = program["nodes"]
    for i, entry in enumerate(entries):
        where = f"{name} node {i}"
        values.where = where
        if type(entry) is not dict or not {"name", "op"} <= set(entry) <= {"name", "op", "target", "args", "kwargs"}:
            fail(where, "a node is {'name', 'op'[, 'target', 'args', 'kwargs']}")
        key, op = entry["name"], entry["op"]
        if type(key) is not str or key in built:
            fail(where, "its name is not a string or not unique")
        if op == "call_function" and entry.get("target") not in ALLOWED_OPS and entry.get("target") not in OPERATOR:
            fail(
                where,
                f"call target {str(entry.get('target'))[:80]!r} is not on the allow-list "
                "(runtime/artifact/allowed_ops.py)",
            )
        args = values(entry.get("args", []))
        raw_kwargs = entry.get("kwargs", {})
        if type(args) is not list or type(raw_kwargs) is not dict:
            fail(where, "args must be a list and kwargs an object")
        kwargs = {k: values(v) for k, v in raw_kwargs.items()}
        plain = not args and not kwargs and "target" not in entry
        if op == "placeholder" and plain:
            node = graph.placeholder(f"input_{i}")
        elif op == "get_attr" and not args and not kwargs and entry.get("target") in renamed:
            node = graph.get_attr(renamed[entry["target"]])
        elif op == "call_function":
            target = _target(entry.get("target"), where, tuple(args), kwargs)
            node = graph.create_node("call_function", target, tuple(args), kwargs, name=f"n{i}")
        elif (
            op == "output"
            and i == len(entries) - 1
            and len(args) == 1
            and not kwargs
            and "target" not in entry
            and type(args[0]) is tuple
            and all(isinstance(a, fx.Node) for a in args[0])
        ):
            node = graph.output(args[0])
        else:
            fail(where, f"op {str(op)[:40]!r} with these fields is not one this format writes")
        built[key] = node
    if not entries or entries[-1].get("op") != "output":
        fail(name, "the graph has no output node last")
    return Program(graph, weights)


def check(description, reader: ArchiveReader) -> dict[str, Program]:
    """The checked programs of a parsed description (raises BadDescription naming the first problem)."""
    if type(description) is not dict or set(description) != {"format", "torch", "device", "programs"}:
        fail("description", "not an object of format, torch, device and programs")
    if description["format"] != FORMAT:
        fail("description", f"format {description['format']!r}, this runtime reads {FORMAT}")
    if description["device"] != "cpu":
        fail("description", f"described on {str(description['device'])[:40]!r}; the exporter describes on cpu")
    programs = description["programs"]
    if type(programs) is not dict or set(programs) != set(PROGRAMS):
        fail("description", f"programs must be exactly {list(PROGRAMS)}")
    checked = {name: _program(name, programs[name], reader) for name in PROGRAMS}
    for name, program in checked.items():
        nodes = list(program.graph.nodes)
        check_signature(name, sum(1 for node in nodes if node.op == "placeholder"), len(nodes[-1].args[0]))
    return checked


# ---- moving (a graph described on the CPU, for another device) -------------------------------------------------
def on_device(graph: fx.Graph, device: torch.device) -> fx.Graph:
    """A copy of `graph` as `torch.export.passes.move_to_device_pass` leaves it (torch 2.13, read for this): every
    `device` keyword and the device argument of `aten.to.device` set to the device's name."""
    name, moved = str(device), fx.Graph()
    remap = moved.graph_copy(graph, {})
    moved.output(remap) if remap is not None else None
    for node in moved.nodes:
        if "device" in node.kwargs:
            node.kwargs = {**node.kwargs, "device": name}
        if node.op == "call_function" and node.target is torch.ops.aten.to.device:
            node.args = (node.args[0], name, *node.args[2:])
    return moved


# ---- building (checked programs into modules on a device, weights read from the file) ----------------------------


def _read_weights(artifact: Path, weights: dict[str, Weight], device: torch.device) -> dict[str, torch.Tensor]:
    storages: dict[str, torch.Tensor] = {}
    tensors = {}
    with open(artifact, "rb", buffering=0) as f:
        for target, w in weights.items():
            flat = storages.get(w.record)
            if flat is None:  # tied weights share one record and one storage, as torch's reader keeps them
                flat = torch.empty(w.nbytes, dtype=torch.uint8)
                view = memoryview((ctypes.c_char * w.nbytes).from_address(flat.data_ptr())).cast("B")
                f.seek(w.offset)
                done = 0
                while done < w.nbytes:
                    n = f.readinto(view[done:])
                    if not n:
                        raise BadDescription(f"{artifact}: ends inside record {w.record}")
                    done += n
                storages[w.record] = flat
            tensor = flat.view(w.dtype).as_strided(w.size, w.stride, w.storage_offset)
            if device.type != "cpu":
                tensor = tensor.to(device)
            tensors[target] = (
                torch.nn.Parameter(tensor, requires_grad=w.requires_grad)
                if w.parameter
                else tensor.requires_grad_(w.requires_grad)
            )
    return tensors


def rebuild(
    programs: dict[str, Program], artifact: Path, device: torch.device
) -> tuple[dict[str, fx.GraphModule], float]:
    """The checked `programs` as modules on `device`, weights read from `artifact`, and the seconds the weights took.
    A graph described on the CPU is moved as torch's device pass would."""
    modules, weights_s = {}, 0.0
    for name, program in programs.items():
        start = time.perf_counter()
        weights = _read_weights(artifact, program.weights, device)
        weights_s += time.perf_counter() - start
        graph = program.graph if device.type == "cpu" else on_device(program.graph, device)
        modules[name] = fx.GraphModule(weights, graph, class_name=name)
    return modules, round(weights_s, 3)

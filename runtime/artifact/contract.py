"""The programs' calling contract: what runtime.captioner and runtime.decode pass each program and take back.

The same for every family (each family's wrappers in export/families are written to it):
- encoder(pixel_values [batch, 3, H, W], the manifest's dtype) -> (cross_k, cross_v), each [layers, batch, heads,
  seq, head_dim] of that dtype, layers, heads and head_dim as the manifest's `cache` says;
- decoder_step(tokens [rows] int64, position [1] int64, self_k, self_v [layers, rows, heads, max_length, head_dim],
  cross_k, cross_v [layers, rows, heads, seq, head_dim]) -> (logits [rows, vocab] floating point, self_k, self_v as
  they came in).
An artifact is held to it twice: every load counts each program's inputs and outputs (`check_signature`, from the
description alone); `make upload` also runs both programs on the meta device at the smallest and the largest batch
and checks each output's dtype, rank and batch dimension (`check_encoder`, `check_step`).
"""

from __future__ import annotations

import torch

from runtime.errors import BadDescription

INPUTS = {
    "encoder": ("pixel_values",),
    "decoder_step": ("tokens", "position", "self_k", "self_v", "cross_k", "cross_v"),
}
OUTPUTS = {"encoder": ("cross_k", "cross_v"), "decoder_step": ("logits", "self_k", "self_v")}


def check_signature(name: str, inputs: int, outputs: int) -> None:
    """Refuse a program that takes or returns another number of values than the runtime passes and takes."""
    for what, count, names in (("takes", inputs, INPUTS[name]), ("returns", outputs, OUTPUTS[name])):
        if count != len(names):
            raise BadDescription(
                f"program {name} {what} {count} values; the runtime's contract is {len(names)} ({', '.join(names)})"
            )


def encoder_inputs(manifest: dict, batch: int, device: str = "meta") -> list[torch.Tensor]:
    """The encoder's inputs as the runtime makes them, for `batch` images."""
    return [torch.empty(batch, 3, *manifest["image_size"], dtype=getattr(torch, manifest["dtype"]), device=device)]


def step_inputs(manifest: dict, rows: int, cross_k: torch.Tensor, cross_v: torch.Tensor) -> list[torch.Tensor]:
    """The decoder step's inputs as the runtime makes them, for `rows` rows over the encoder's outputs."""
    cache, dtype, device = manifest["cache"], getattr(torch, manifest["dtype"]), cross_k.device
    layers = (cache["layers"], rows, cache["heads"], manifest["max_length"], cache["head_dim"])
    return [
        torch.empty(rows, dtype=torch.long, device=device),
        torch.empty(1, dtype=torch.long, device=device),
        torch.empty(layers, dtype=dtype, device=device),
        torch.empty(layers, dtype=dtype, device=device),
        *(torch.empty(t.shape[:1] + (rows,) + t.shape[2:], dtype=t.dtype, device=device) for t in (cross_k, cross_v)),
    ]


def _tensors(name: str, outputs) -> tuple[torch.Tensor, ...]:
    if (
        type(outputs) not in (tuple, list)
        or len(outputs) != len(OUTPUTS[name])
        or not all(isinstance(t, torch.Tensor) for t in outputs)
    ):
        raise BadDescription(
            f"program {name} returns {type(outputs).__name__}, not {len(OUTPUTS[name])} tensors "
            f"({', '.join(OUTPUTS[name])})"
        )
    return tuple(outputs)


def _refuse(name: str, index: int, tensor: torch.Tensor, why: str):
    raise BadDescription(
        f"program {name} output {index} ({OUTPUTS[name][index]}): {str(tensor.dtype)[6:]} {list(tensor.shape)}, {why}"
    )


def check_encoder(outputs, manifest: dict, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's (cross_k, cross_v) for `batch` images, or BadDescription naming the output and the mismatch."""
    cache, dtype = manifest["cache"], getattr(torch, manifest["dtype"])
    found = _tensors("encoder", outputs)
    for index, tensor in enumerate(found):
        if tensor.dtype != dtype:
            _refuse("encoder", index, tensor, f"the runtime's caches are {manifest['dtype']}")
        if tensor.dim() != 5:
            _refuse("encoder", index, tensor, "the runtime takes [layers, batch, heads, seq, head_dim]")
        if tensor.shape[1] != batch:
            _refuse("encoder", index, tensor, f"its dimension 1 is not the batch ({batch} images)")
        if (tensor.shape[0], tensor.shape[2], tensor.shape[4]) != (cache["layers"], cache["heads"], cache["head_dim"]):
            _refuse(
                "encoder",
                index,
                tensor,
                f"the manifest's cache is {cache['layers']} layers, {cache['heads']} heads of {cache['head_dim']}",
            )
    return found[0], found[1]


def check_step(outputs, inputs: list[torch.Tensor], rows: int) -> None:
    """The decoder step's (logits, self_k, self_v) for `rows` rows, or BadDescription naming the mismatch."""
    logits, *caches = _tensors("decoder_step", outputs)
    if not logits.is_floating_point() or logits.dim() != 2 or logits.shape[0] != rows:
        _refuse("decoder_step", 0, logits, f"the runtime takes floating-point [rows, vocab] ({rows} rows)")
    for index, (tensor, given) in enumerate(zip(caches, inputs[2:4]), start=1):
        if tensor.dtype != given.dtype or tensor.shape != given.shape:
            _refuse(
                "decoder_step",
                index,
                tensor,
                f"the runtime passes it back as {str(given.dtype)[6:]} {list(given.shape)}",
            )


TOKEN_IDS = ("start_token_id", "eos_token_id", "forced_bos_token_id", "forced_eos_token_id")


def check_token_ids(logits: torch.Tensor, generation: dict) -> None:
    """The generation block's token ids inside the step's vocabulary (its logits' width), or BadDescription: the
    decode feeds them back to the step as tokens, and an index past an embedding asserts on a CUDA device, which
    ends the process, not the batch."""
    vocab = logits.shape[-1]
    outside = {
        key: generation[key] for key in TOKEN_IDS if generation.get(key) is not None and generation[key] >= vocab
    }
    if outside:
        named = ", ".join(f"{key} {value}" for key, value in outside.items())
        raise BadDescription(f"the manifest's generation has {named}, outside the step's vocabulary of {vocab}")

"""torch.export of the encoder and decoder-step modules with a dynamic batch dimension."""

from __future__ import annotations

import torch
from torch.export import Dim, ExportedProgram

from runtime.artifact.manifest import EXAMPLE_BATCH, program_batches


def example_inputs(
    encoder: torch.nn.Module,
    image_size: tuple[int, int],
    cache: dict,
    max_length: int,
    dtype: torch.dtype,
    batch: int = EXAMPLE_BATCH,
):
    """Example pixels and step inputs (batch >= 2, so the batch dimension stays symbolic)."""
    pixels = torch.zeros(batch, 3, *image_size, dtype=dtype)
    with torch.no_grad():
        cross_k, cross_v = encoder(pixels)
    shape = (cache["layers"], batch, cache["heads"], max_length, cache["head_dim"])
    step = (
        torch.zeros(batch, dtype=torch.long),
        torch.zeros(1, dtype=torch.long),
        torch.zeros(shape, dtype=dtype),
        torch.zeros(shape, dtype=dtype),
        cross_k,
        cross_v,
    )
    return (pixels,), step


def export_programs(
    encoder: torch.nn.Module,
    step: torch.nn.Module,
    image_size: tuple[int, int],
    cache: dict,
    max_length: int,
    max_batch: int,
    max_beams: int,
    dtype: torch.dtype,
) -> dict[str, ExportedProgram]:
    """Export both programs on the CPU: images from 1 to `max_batch`, decoder rows up to `max_batch * max_beams`.

    No `run_decompositions`: a CPU-decomposed graph can bake in CPU-only attention kernels.
    """
    images, decoder_rows = program_batches(max_batch, max_beams)
    batch = Dim("batch", min=1, max=images)
    pixels, step_inputs = example_inputs(encoder, image_size, cache, max_length, dtype)
    with torch.no_grad():
        enc = torch.export.export(encoder, pixels, dynamic_shapes=({0: batch},), strict=False)
        rows = {1: Dim("rows", min=1, max=decoder_rows)}
        dec = torch.export.export(
            step,
            step_inputs,
            strict=False,
            dynamic_shapes=({0: rows[1]}, None, rows, rows, rows, rows),
        )
    return {"encoder": enc, "decoder_step": dec}

"""Compile an artifact's two programs, rebuilt from its validated description, into one AOTInductor package."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from runtime.artifact.manifest import EXAMPLE_BATCH, program_batches
from runtime.artifact.verify import check_artifact
from runtime.backends.exported import load_programs
from runtime.errors import ArtifactError
from runtime.load_policy import explicit_index


def compile_package(
    artifact: str | os.PathLike, device: torch.device, out: Path, inductor_configs: dict | None = None
) -> Path:
    """Compile both programs of `artifact` with AOTInductor for `device` into one package at `out`.

    The programs are the ones runtime.backends.exported.load_programs rebuilds from the artifact's validated description
    (torch's archive loader is not a safe one), re-exported here from example inputs the manifest sizes, with
    the batch dynamic as export/trace.py made it.
    """
    from runtime.artifact.pt2 import package_pt2

    artifact, device = Path(artifact), explicit_index(torch.device(device))
    checked = check_artifact(artifact, device=device)
    sizes = example_sizes(checked.manifest)
    # load_programs on the device moves the graphs' own device arguments too (a bare .to() would leave them)
    programs = load_programs(checked, device)
    options = {**(inductor_configs or {}), "aot_inductor.package": True}
    files = {}
    with torch.no_grad():
        for name, (args, dynamic_shapes) in example_inputs(programs["encoder"], sizes, device).items():
            exported = torch.export.export(programs[name], args, dynamic_shapes=dynamic_shapes, strict=False)
            # .module() runs guard code this process's export just wrote, none read from the artifact.
            # torch._inductor.aoti_compile_and_package (public) writes one program per package; two in one package
            # take aot_compile + package_pt2, the route its own docstring gives (torch 2.13; no public one yet).
            files[name] = torch._inductor.aot_compile(exported.module(check_guards=False), args, options=options)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.pt2")
    package_pt2(str(partial), aoti_files=files)
    partial.replace(out)
    return out


_EXAMPLE_ELEMENTS = 1 << 28  # per example image or cache row: far above any shipped model, bounds a bad manifest


def example_sizes(manifest: dict) -> dict:
    """The manifest's sizes that the programs were exported for, checked as positive, bounded integers."""
    cache = manifest.get("cache") if isinstance(manifest.get("cache"), dict) else {}
    image_size = manifest.get("image_size")
    height, width = image_size if isinstance(image_size, list) and len(image_size) == 2 else (None, None)
    sizes = {
        "height": height,
        "width": width,
        **{key: manifest.get(key) for key in ("max_batch", "max_beams", "max_length")},
        **{key: cache.get(key) for key in ("layers", "heads", "head_dim")},
    }
    bad = sorted(key for key, value in sizes.items() if type(value) is not int or not 0 < value < _EXAMPLE_ELEMENTS)
    if bad:
        raise ArtifactError(
            f"the manifest lacks valid {', '.join(bad)} (image_size, cache, max_*): "
            "export the model again to compile it"
        )
    if (
        3 * sizes["height"] * sizes["width"] > _EXAMPLE_ELEMENTS
        or sizes["layers"] * sizes["heads"] * sizes["max_length"] * sizes["head_dim"] > _EXAMPLE_ELEMENTS
    ):
        raise ArtifactError(f"the manifest's sizes {sizes} make example inputs too large to compile from")
    dtype = getattr(torch, str(manifest.get("dtype")), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ArtifactError(f"the manifest's dtype {manifest.get('dtype')!r} is not a floating-point torch dtype")
    return {**sizes, "dtype": dtype}


def example_inputs(encoder, sizes: dict, device: torch.device) -> dict[str, tuple[tuple, tuple]]:
    """Per program, example inputs and dynamic shapes as export/trace.py gives them: batch 2 (so the batch stays
    symbolic), images up to `max_batch`, decoder rows up to `max_batch * max_beams`."""
    from torch.export import Dim

    example, dtype = EXAMPLE_BATCH, sizes["dtype"]
    pixels = torch.zeros(example, 3, sizes["height"], sizes["width"], dtype=dtype, device=device)
    with torch.no_grad():
        cross_k, cross_v = encoder(pixels)
    cache = (sizes["layers"], example, sizes["heads"], sizes["max_length"], sizes["head_dim"])
    step = (
        torch.zeros(example, dtype=torch.long, device=device),
        torch.zeros(1, dtype=torch.long, device=device),
        torch.zeros(cache, dtype=dtype, device=device),
        torch.zeros(cache, dtype=dtype, device=device),
        cross_k,
        cross_v,
    )
    images, decoder_rows = program_batches(sizes["max_batch"], sizes["max_beams"])
    batch, rows = Dim("batch", min=1, max=images), Dim("rows", min=1, max=decoder_rows)
    return {
        "encoder": ((pixels,), ({0: batch},)),
        "decoder_step": (step, ({0: rows}, None, {1: rows}, {1: rows}, {1: rows}, {1: rows})),
    }

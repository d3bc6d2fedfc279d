"""torch's PT2 archive API as CaptionKit uses it, in one place: the public names, and why two come from elsewhere."""

from __future__ import annotations

from torch.export.pt2_archive import PT2ArchiveReader, PT2ArchiveWriter

# An artifact holds two exported programs (and a compiled package holds two AOTInductor models). The public
# torch.export.save/load and torch._inductor.aoti_compile_and_package/aoti_load_package handle a single program
# named "model"; package_pt2 and load_pt2 are the functions they call, meant for archives of several programs
# (pytorch/pytorch#152495: "power users directly call into these APIs"), but no torch release so far (2.13
# checked) re-exports them from torch.export.pt2_archive. When one does, import them from there instead.
from torch.export.pt2_archive._package import load_pt2, package_pt2

from runtime.artifact.archive import EXTRA_DIR  # an archive's extra files (reading them needs no torch.export)

__all__ = ["EXTRA_DIR", "PT2ArchiveReader", "PT2ArchiveWriter", "load_pt2", "package_pt2"]

"""CaptionKit runtime: load a .pt2 captioning artifact and caption images with torch alone.

`from runtime import load_captioner, LoadOptions, Captioner, CaptionKitError` is the library's surface; the
names are looked up on first use, so `import runtime.<module>` (the agent, the stack) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_captioner": "runtime.captioner",
    "Captioner": "runtime.captioner",
    "LoadOptions": "runtime.options",
    "CaptionKitError": "runtime.errors",
    "ArtifactError": "runtime.errors",
    "BadImage": "runtime.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

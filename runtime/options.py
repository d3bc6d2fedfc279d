"""How an artifact is loaded: one frozen dataclass the caption CLI, the agent and the benchmarks pass in (no torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoadOptions:
    """How an artifact is loaded: which programs run and the passes applied at load (the file never changes); the
    rules between these and the device are runtime.load_policy's."""

    backend: str = "exported"  # runtime.load_policy.BACKENDS; aoti: compiled and cached (runtime.backends.aoti)
    quantize: str | None = None  # "int8" | "fp16": CPU linears on fbgemm kernels (runtime.passes.quantize)
    decode_layout: bool = True  # CPU: the decoder step's linears as weight @ x.T (runtime.passes.decode_layout)
    pack_linears: bool = True  # with decode_layout: several rows on oneDNN-packed weights, where torch has oneDNN
    cache_in_place: bool = True  # the step writes its caches in place, on any device (runtime.passes.cache_in_place)
    one_mask: bool = True  # the step's boolean attention mask made float once per step (runtime.passes.one_mask)
    one_gelu: bool = True  # GPT-2's written-out tanh GELU as one op, float32 only (runtime.passes.one_gelu)
    remote: object = None  # aoti: a shared store of compiled packages (runtime.backends.aoti.RemoteStore)

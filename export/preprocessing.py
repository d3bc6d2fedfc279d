"""Describe an HF image processor as the manifest's "preprocessing" spec, refusing what the runtime can't reproduce."""

from __future__ import annotations

from typing import NoReturn

from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import get_size_dict
from transformers.image_utils import PILImageResampling, SizeDict

from export.errors import UnsupportedProcessor
from runtime.errors import ArtifactError
from runtime.images.preprocess import validate_spec

# The runtime re-implements these PilBackend methods; a subclass overriding any of them does
# something else and cannot be described by the spec.
PIPELINE_METHODS = (
    "__call__",
    "preprocess",
    "_standardize_kwargs",
    "_validate_preprocess_kwargs",
    "_preprocess_image_like_inputs",
    "_prepare_image_like_inputs",
    "_prepare_images_structure",
    "fetch_images",
    "process_image",
    "convert_to_rgb",
    "_preprocess",
    "resize",
    "center_crop",
    "rescale",
    "normalize",
    "pad",
)
SIZE_KEYS = ({"height", "width"}, {"shortest_edge"})


def spec_from_processor(processor) -> dict:
    """The JSON-ready spec with which `runtime.images.preprocess` reproduces `processor(images=...)` exactly.

    Accepts an image processor or a combined processor (its `image_processor` is used). Raises
    `UnsupportedProcessor` naming the processor class and the setting it cannot reproduce.
    """
    processor = getattr(processor, "image_processor", processor)
    name = type(processor).__name__
    _check_backend(processor, name)
    if getattr(processor, "do_pad", None):
        _refuse(name, f"do_pad={processor.do_pad!r}", "the runtime does not pad batches")
    do_resize, do_crop = bool(processor.do_resize), bool(processor.do_center_crop)
    do_rescale, do_normalize = bool(processor.do_rescale), bool(processor.do_normalize)
    size = _size(processor.size, "size", processor.default_to_square, name) if do_resize else None
    crop_size = _size(processor.crop_size, "crop_size", True, name) if do_crop else None
    if do_resize and set(size) not in SIZE_KEYS:
        _refuse(name, f"size={size}", "only {height, width} or {shortest_edge} resizes are reproduced")
    if do_crop and set(crop_size) != {"height", "width"}:
        _refuse(name, f"crop_size={crop_size}", "a center crop needs height and width")
    if not do_crop and (not do_resize or "shortest_edge" in size):
        _refuse(
            name,
            f"do_resize={do_resize}, size={size}, do_center_crop={do_crop}",
            "pixel values would vary in size with the input; the exported encoder takes one fixed size",
        )
    if not (do_rescale or do_normalize):
        _refuse(name, "do_rescale=False, do_normalize=False", "HF would return uint8 pixel values")
    spec = {
        "processor_class": name,
        "backend": "pil",
        "do_convert_rgb": bool(processor.do_convert_rgb),
        "do_resize": do_resize,
        "size": size,
        "resample": _resample(processor.resample, name) if do_resize else None,
        "do_center_crop": do_crop,
        "crop_size": crop_size,
        "do_rescale": do_rescale,
        "rescale_factor": float(processor.rescale_factor) if do_rescale else None,
        "do_normalize": do_normalize,
        "image_mean": _per_channel(processor.image_mean, "image_mean", name) if do_normalize else None,
        "image_std": _per_channel(processor.image_std, "image_std", name) if do_normalize else None,
        "channel_order": "RGB",
        "data_format": "channels_first",
        "dtype": "float32",
    }
    try:
        validate_spec(spec)
    except ArtifactError as exc:
        raise UnsupportedProcessor(f"{name}: {exc}") from None
    return spec


def _check_backend(processor, name: str) -> None:
    if not isinstance(processor, PilBackend):
        _refuse(
            name,
            f"backend {getattr(processor, 'backend', type(processor).__mro__[1].__name__)!r}",
            "the runtime reproduces transformers' PIL backend; load the processor with "
            'AutoImageProcessor.from_pretrained(..., backend="pil") or its Pil class, e.g. ViTImageProcessorPil',
        )
    overridden = [m for m in PIPELINE_METHODS if getattr(type(processor), m) is not getattr(PilBackend, m)]
    if overridden:
        _refuse(name, f"custom {', '.join(overridden)}", "only the stock PilBackend pipeline is reproduced")


def _size(value, param: str, default_to_square: bool, name: str) -> dict:
    if value is None:
        _refuse(name, f"{param}=None", f"a {param} is needed when that step is enabled")
    if not isinstance(value, (dict, SizeDict)):
        value = get_size_dict(value, default_to_square=default_to_square, param_name=param)
    return {key: int(v) for key, v in dict(value).items() if v is not None}


def _resample(value, name: str) -> int:
    if value is None:  # PilBackend.resize's own fallback
        return int(PILImageResampling.BILINEAR)
    if not isinstance(value, int):
        _refuse(name, f"resample={value!r}", "expected a PIL resampling code")
    return int(value)


def _per_channel(value, param: str, name: str) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * 3
    if value is None or len(value) != 3:
        _refuse(name, f"{param}={value!r}", "expected 3 values, one per RGB channel")
    return [float(v) for v in value]


def _refuse(name: str, setting: str, why: str) -> NoReturn:
    raise UnsupportedProcessor(f"{name}: {setting} is not supported by the CaptionKit runtime ({why})")

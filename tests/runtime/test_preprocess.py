"""The runtime's preprocessing reproduces HF's load_image + PIL-backed image processor on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import PIL.Image
import pytest
import torch
from images import KINDS, write_image
from transformers import BlipImageProcessor, CLIPImageProcessor, DeiTImageProcessor, ViTImageProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.image_utils import load_image as hf_load_image
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil
from transformers.models.vit.image_processing_vit import ViTImageProcessor as ViTImageProcessorTorchvision

from export.preprocessing import UnsupportedProcessor, spec_from_processor
from runtime.errors import ArtifactError
from runtime.images import load_image
from runtime.images.preprocess import Preprocessor, output_size, preprocess, validate_spec
from tools.paths import REPO

TOLERANCE = 1e-5
PROCESSORS = {
    "vit224_bilinear": lambda: ViTImageProcessor(size={"height": 224, "width": 224}),
    "blip384_bicubic": lambda: BlipImageProcessor(),
    "deit_resize_crop": lambda: DeiTImageProcessor(),
    "deit_hub_config": lambda: DeiTImageProcessor(
        size=256, crop_size=224, image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD
    ),
    "vit32_demo": lambda: ViTImageProcessor(size={"height": 32, "width": 32}),
    # microsoft/trocr-base-*: 384 px, bilinear, mean and std 0.5
    "trocr384": lambda: ViTImageProcessor(
        size={"height": 384, "width": 384}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ),
    # florence-community/Florence-2-base's preprocessor_config.json: CLIP's class, straight to 768 x 768, bicubic
    "florence768_clip": lambda: CLIPImageProcessor(
        do_resize=True,
        size={"height": 768, "width": 768},
        resample=3,
        do_center_crop=False,
        crop_size={"height": 768, "width": 768},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=None,
    ),
    "shortest_edge_crop": lambda: ViTImageProcessor(
        size={"shortest_edge": 41}, do_center_crop=True, crop_size={"height": 32, "width": 32}
    ),
    "crop_with_padding": lambda: ViTImageProcessor(
        do_resize=False, do_center_crop=True, crop_size={"height": 128, "width": 128}
    ),
}


@pytest.fixture(scope="module")
def processors():
    return {name: make() for name, make in PROCESSORS.items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    return {kind: write_image(kind, folder) for kind in KINDS}


def hf_pixels(processor, paths) -> torch.Tensor:
    return processor(images=[hf_load_image(str(p)) for p in paths], return_tensors="pt").pixel_values


def our_pixels(processor, paths) -> torch.Tensor:
    spec = json.loads(json.dumps(spec_from_processor(processor)))  # as the runtime reads it from the manifest
    return preprocess([load_image(p) for p in paths], spec)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype == torch.float32, (a.shape, b.shape, a.dtype, b.dtype)
    return (a - b).abs().max().item()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", PROCESSORS)
def test_pixel_values_match_hf(processors, files, name, kind):
    processor = processors[name]
    diff = max_diff(our_pixels(processor, [files[kind]]), hf_pixels(processor, [files[kind]]))
    print(f"{name:20s} {kind:20s} max abs diff {diff:.3g}")
    assert diff <= TOLERANCE


@pytest.mark.parametrize("name", ["blip384_bicubic", "deit_resize_crop", "shortest_edge_crop", "crop_with_padding"])
def test_batch_of_mixed_sizes_equals_single_images_and_hf(processors, files, name):
    processor = processors[name]
    paths = [files[k] for k in ("jpeg.jpg", "tall_odd.png", "large.jpg", "exif_rotated6.jpg", "gif_palette.gif")]
    batch = our_pixels(processor, paths)
    singles = torch.cat([our_pixels(processor, [p]) for p in paths])
    assert torch.equal(batch, singles)
    assert batch.shape == (len(paths), 3, *output_size(spec_from_processor(processor)))
    assert max_diff(batch, hf_pixels(processor, paths)) <= TOLERANCE


@pytest.mark.parametrize("kind", ["exif_rotated6.jpg", "exif_rotated8.jpg"])
def test_exif_case_would_catch_a_missing_transpose(processors, files, kind):
    processor = processors["vit224_bilinear"]
    raw = PIL.Image.open(files[kind]).convert("RGB")
    assert load_image(files[kind]).size == raw.size[::-1]
    unrotated = preprocess([raw], spec_from_processor(processor))
    assert max_diff(unrotated, hf_pixels(processor, [files[kind]])) > 0.5


def test_gif_transparency_composited_on_white_when_processor_converts_rgb(processors, files):
    processor = processors["blip384_bicubic"]
    image = load_image(files["gif_palette.gif"])
    assert image.info.get("transparency") is not None
    plain = image.copy()
    plain.info.pop("transparency")
    spec = spec_from_processor(processor)
    assert spec["do_convert_rgb"]
    assert max_diff(preprocess([image], spec), preprocess([plain], spec)) > 0.5


def test_runtime_preprocess_never_imports_transformers(processors, files):
    spec = json.dumps(spec_from_processor(processors["deit_resize_crop"]))
    code = (
        "import json, sys\n"
        "from runtime.images import load_image\n"
        "from runtime.images.preprocess import preprocess\n"
        f"pixels = preprocess([load_image({str(files['cmyk.jpg'])!r})], json.loads({spec!r}))\n"
        "assert pixels.shape == (1, 3, 224, 224), pixels.shape\n"
        "assert 'transformers' not in sys.modules, 'runtime.images.preprocess imported transformers'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_combined_processor_is_described_by_its_image_processor(processors):
    blip = processors["blip384_bicubic"]
    assert spec_from_processor(SimpleNamespace(image_processor=blip)) == spec_from_processor(blip)


def test_torchvision_backend_is_refused_with_the_pil_alternative():
    torchvision_vit = object.__new__(ViTImageProcessorTorchvision)  # constructing it needs torchvision
    with pytest.raises(UnsupportedProcessor, match="ViTImageProcessor: backend 'torchvision'.*ViTImageProcessorPil"):
        spec_from_processor(torchvision_vit)


class CustomPipeline(ViTImageProcessorPil):
    def _preprocess(self, images, **kwargs):
        return super()._preprocess(images, **kwargs)


@pytest.mark.parametrize(
    "make, setting",
    [
        (lambda: ViTImageProcessor(do_pad=True, pad_size={"height": 256, "width": 256}), "do_pad=True"),
        (lambda: ViTImageProcessor(size={"shortest_edge": 224}), "do_center_crop=False"),
        (
            lambda: ViTImageProcessor(
                size={"shortest_edge": 224, "longest_edge": 300}, do_center_crop=True, crop_size=224
            ),
            "longest_edge",
        ),
        (lambda: ViTImageProcessor(do_rescale=False, do_normalize=False), "do_normalize=False"),
        (lambda: CustomPipeline(), "custom _preprocess"),
    ],
)
def test_unreproducible_processor_is_refused_by_name(make, setting):
    with pytest.raises(UnsupportedProcessor) as info:
        spec_from_processor(make())
    assert "ViTImageProcessorPil" in str(info.value) or "CustomPipeline" in str(info.value)
    assert setting in str(info.value)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour_space": "srgb"}, "unknown keys ['colour_space']"),
        ({"resample": 99}, "resample=99"),
        ({"size": {"height": 224}}, "size={'height': 224}"),
        ({"image_std": [0.5, 0.0, 0.5]}, "contains 0"),
        ({"do_center_crop": False}, "crop_size={'height': 224, 'width': 224} but do_center_crop is false"),
        ({"dtype": "bfloat16"}, "dtype='bfloat16'"),
    ],
)
def test_validate_spec_names_the_bad_setting(processors, change, message):
    spec = {**spec_from_processor(processors["deit_resize_crop"]), **change}
    with pytest.raises(ArtifactError) as info:
        validate_spec(spec)
    assert message in str(info.value)


def test_non_rgb_image_is_refused_when_processor_does_not_convert(processors):
    preprocessor = Preprocessor(spec_from_processor(processors["vit32_demo"]))
    with pytest.raises(ValueError, match="mode L"):
        preprocessor([PIL.Image.new("L", (40, 30))])

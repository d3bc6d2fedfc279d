"""The runtime's preprocessing plus the encoder's patchify reproduce Qwen2VLImageProcessor (PIL) on awkward files."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers.image_transforms import convert_to_rgb
from transformers.image_utils import load_image as hf_load_image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

from export.families.qwen_vl import preprocessing
from export.families.qwen_vl_programs import patchify, unpatchify
from runtime.images import load_image
from runtime.images.preprocess import Preprocessor
from tests.runtime.images import KINDS, write_image

SIZES = {14: (112, 140), 16: (96, 160)}  # what the processor's own smart resize makes of the 150 x 100 test photos


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    return {kind: write_image(kind, folder) for kind in KINDS}


@pytest.mark.parametrize("patch", [14, 16])
def test_pixels_equal_the_hf_processor_on_every_file(files, patch):
    """Files the processor itself resizes to the artifact's size are compared as they are; the others (a tall odd
    image) against HF given the image resized first, as qwen_vl_utils' resized_height/resized_width do."""
    proc = Qwen2VLImageProcessorPil(patch_size=patch)
    size = SIZES[patch]
    runtime = Preprocessor(preprocessing(SimpleNamespace(processor=proc, extras={"image_size": size})))
    straight = 0
    for kind, path in files.items():
        image = hf_load_image(str(path))
        if smart_resize(image.height, image.width, factor=2 * patch) == size:
            straight += 1
        else:
            image = convert_to_rgb(image).resize(size[::-1], resample=proc.resample)
        hf = proc(images=[image], return_tensors="pt")["pixel_values"]
        ours = patchify(runtime([load_image(str(path))]), patch, 2, 2).reshape(hf.shape)
        assert torch.equal(ours, hf), (kind, float((ours - hf).abs().max()))
    assert straight >= len(files) // 2


def test_unpatchify_inverts_patchify():
    pixels = torch.randn(3, 3, 56, 84)
    assert torch.equal(unpatchify(patchify(pixels, 14, 2, 2).reshape(-1, 3 * 2 * 14 * 14), (56, 84), 14, 2, 2), pixels)

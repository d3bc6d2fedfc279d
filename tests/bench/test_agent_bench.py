"""bench.agent's pipeline alone: the agent's own prefetcher, on moto, turns the queued images into the captioner's
pixels, and its threads are sized as the boot sizes them."""

from __future__ import annotations

import io

import PIL.Image
import pytest
import torch

from bench.pipeline import boot_threads, bound, pipeline_alone
from runtime.captioner import load_captioner
from runtime.images import load_image


def _jpeg(width: int, height: int, seed: int) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=generator).numpy()
    buf = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_the_pipeline_alone_makes_the_captioners_pixels_of_every_queued_image(stack, tiny_artifact):
    images = {f"incoming/p-{i}.jpg": _jpeg(20 + 7 * i, 48 - 5 * i, i) for i in range(5)}
    for key, body in images.items():
        stack.put(key, body)
        stack.send_event(key)
    run = pipeline_alone(
        stack.queue, stack.images, tiny_artifact, len(images), batch_size=2, threads=2, keep_pixels=True
    )
    assert run.images == 5 and run.threads == 2 and run.seconds > 0 and run.images_per_s > 0
    captioner = load_captioner(tiny_artifact, "cpu")
    assert sorted(run.pixels) == sorted(images)
    for key, body in images.items():
        expected = captioner.preprocess([load_image(body)])[0]
        assert run.pixels[key].shape == expected.shape and torch.equal(run.pixels[key], expected), key


def test_the_pipeline_alone_refuses_a_figure_for_an_image_that_never_became_pixels(stack, tiny_artifact):
    stack.put("incoming/good.jpg", _jpeg(16, 16, 0))
    stack.put("incoming/bad.jpg", b"not an image")
    stack.send_event("incoming/good.jpg", "incoming/bad.jpg")
    with pytest.raises(RuntimeError, match="bad.jpg: not a readable image"):
        pipeline_alone(stack.queue, stack.images, tiny_artifact, 2, batch_size=2, threads=2)


def test_threads_are_the_vcpus_per_gpu_and_at_least_two_as_the_boot_gives_them():
    # the table of tests/stacks/test_boot_gpus.py, which runs the boot itself
    assert [boot_threads(vcpus, gpus) for gpus, vcpus in ((1, 4), (8, 8), (8, 192), (1, 1))] == [4, 2, 24, 2]
    assert boot_threads() >= 2


def test_the_slower_alone_is_the_bound():
    assert bound(3.0, 5.0) == "pipeline" and bound(5.0, 3.0) == "model"

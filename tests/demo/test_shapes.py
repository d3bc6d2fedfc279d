"""The procedural shapes data set: deterministic per seed, and every caption says what the pixels show."""

from __future__ import annotations

import io
import json

import numpy as np
import PIL.Image
import pytest

from demo import shapes
from runtime.images import load_image


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    seen, parts = np.zeros_like(mask), []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start], stack, part = True, [start], []
        while stack:
            y, x = stack.pop()
            part.append((y, x))
            for n in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= n[0] < mask.shape[0] and 0 <= n[1] < mask.shape[1] and mask[n] and not seen[n]:
                    seen[n] = True
                    stack.append(n)
        parts.append(part)
    return [p for p in parts if len(p) > 4]  # drops JPEG ringing specks


def _outline(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    rows = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    fill, widest = rows.mean(), np.argmax(rows.sum(axis=1)) / (len(rows) - 1)
    if fill > 0.95:
        return "square"
    if widest > 0.6:
        return "triangle"
    return "circle" if fill > 0.66 else "diamond"


def _read(image: PIL.Image.Image) -> dict:
    """What the pixels show, found without the renderer: the shapes' colour, count, outline, place, size."""
    pixels = np.asarray(image, dtype=float)
    mask = np.abs(pixels - pixels[0, 0]).max(axis=2) > 80
    parts = _components(mask)
    mean = pixels[mask].mean(axis=0)
    colour = min(shapes.COLOURS, key=lambda c: np.abs(np.array(shapes.COLOURS[c]) - mean).sum())
    ys, xs = np.nonzero(mask)
    dx, dy = xs.mean() - 15.5, ys.mean() - 15.5
    where = (
        "centre"
        if max(abs(dx), abs(dy)) < 3
        else (("left" if dx < 0 else "right") if abs(dx) > abs(dy) else ("top" if dy < 0 else "bottom"))
    )
    return {
        "colour": colour,
        "count": len(parts),
        "where": where,
        "area": mask.sum() / len(parts),
        "shape": _outline(mask) if len(parts) == 1 else None,
    }


def _jpeg(image: PIL.Image.Image) -> PIL.Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return load_image(buffer.getvalue())


def test_same_seed_gives_identical_samples_and_another_seed_differs():
    first, again, other = (shapes.make_dataset(40, seed) for seed in (7, 7, 8))
    assert [(i.tobytes(), c) for i, c in first] == [(i.tobytes(), c) for i, c in again]
    assert [c for _, c in first] != [c for _, c in other]


@pytest.mark.parametrize("round_trip", [lambda image: image, _jpeg], ids=["raw", "jpeg"])
def test_caption_states_the_colour_count_shape_place_and_size_the_pixels_show(round_trip):
    for image, caption in shapes.make_dataset(300, seed=3):
        seen = _read(round_trip(image))
        words = caption.split()
        count = {"two": 2, "three": 3}.get(words[0], 1)
        assert seen["colour"] in words, (caption, seen)
        assert seen["count"] == count, (caption, seen)
        if count == 1:
            where = next((w for w in ("left", "right", "top", "bottom") if w in words), "centre")
            assert seen["where"] == where, (caption, seen)
            assert (seen["area"] > 130) == ("big" in words), (caption, seen)
            assert seen["shape"] in words, (caption, seen)


def test_every_scene_has_its_own_caption_in_the_vocabulary_with_varied_lengths():
    captions = [scene.caption for scene in shapes.all_scenes()]
    assert len(set(captions)) == len(captions) == 288
    assert {w for c in captions for w in c.split()} == set(shapes.WORDS)
    lengths = {len(c.split()) for c in captions}
    assert lengths == {3, 4, 6, 7} and max(lengths) == shapes.MAX_CAPTION_WORDS


def test_distinct_scenes_render_distinct_images():
    images = {shapes.render(scene).tobytes() for scene in shapes.all_scenes()}
    assert len(images) == len(shapes.all_scenes())


def test_scene_for_finds_the_scene_of_a_caption_and_rejects_others():
    for scene in shapes.all_scenes():
        assert shapes.scene_for(scene.caption) == scene
    with pytest.raises(ValueError, match="not a shapes caption"):
        shapes.scene_for("a red dog")


def test_write_samples_saves_readable_files_and_their_ground_truth(tmp_path):
    truth = shapes.write_samples(tmp_path, 6, seed=5, fmt="jpeg")
    assert json.loads((tmp_path / "captions.json").read_text()) == truth
    assert list(truth.values()) == [c for _, c in shapes.make_dataset(6, seed=5)]
    for name in truth:
        assert load_image(tmp_path / name).size == (shapes.IMAGE_SIZE_PX, shapes.IMAGE_SIZE_PX)

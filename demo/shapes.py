"""Procedural 32x32 images of coloured shapes with exactly known captions, for the demo captioner."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import PIL.Image
import PIL.ImageDraw

IMAGE_SIZE_PX = 32
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 190, 40),
    "blue": (40, 70, 240),
    "yellow": (240, 225, 30),
    "white": (245, 245, 245),
    "purple": (170, 40, 210),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES_PX = {"small": 10, "big": 18}
WHERE = ("centre", "left", "right", "top", "bottom")
_WHERE_WORDS = {
    "centre": "",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
_COUNT_WORDS = {2: "two", 3: "three"}
# Fixed anchor points, no jitter: shapes that straddle ViT patch boundaries differently from image to
# image made accuracy seed-dependent (docs/architecture.md, "the demo captioner trial").
_GROUP_CENTRES = {2: [(8, 16), (24, 16)], 3: [(16, 8), (8, 23), (24, 23)]}
_COLOUR_JITTER = 25
_BACKGROUND_MAX = 45

WORDS = sorted(
    {w for phrase in _WHERE_WORDS.values() for w in phrase.split()}
    | set(COLOURS)
    | set(SHAPES)
    | {s + "s" for s in SHAPES}
    | {"a", "big"}
    | set(_COUNT_WORDS.values())
)


@dataclass(frozen=True)
class Scene:
    """What an image shows: `count` shapes of one kind and colour, or one shape with a size and place."""

    shape: str
    colour: str
    count: int = 1
    size: str = "small"
    where: str = "centre"

    @property
    def caption(self) -> str:
        """The one correct caption, e.g. 'a big blue square on the left' or 'two red circles'."""
        if self.count > 1:
            return f"{_COUNT_WORDS[self.count]} {self.colour} {self.shape}s"
        big = "big " if self.size == "big" else ""
        return f"a {big}{self.colour} {self.shape} {_WHERE_WORDS[self.where]}".strip()


def all_scenes() -> list[Scene]:
    """Every distinct scene (and so every caption) the generator can produce."""
    singles = [Scene(s, c, 1, z, w) for s in SHAPES for c in COLOURS for z in SIZES_PX for w in WHERE]
    return singles + [Scene(s, c, n) for n in _COUNT_WORDS for s in SHAPES for c in COLOURS]


MAX_CAPTION_WORDS = max(len(scene.caption.split()) for scene in all_scenes())


def scene_for(caption: str) -> Scene:
    """The scene a caption describes, e.g. scene_for('two red circles'), to render images on demand."""
    for scene in all_scenes():
        if scene.caption == caption:
            return scene
    raise ValueError(
        f"{caption!r} is not a shapes caption; expected e.g. 'a red circle', "
        "'a big blue square on the left' or 'three green triangles' (see all_scenes())"
    )


def _centres(scene: Scene) -> list[tuple[int, int]]:
    if scene.count > 1:
        return _GROUP_CENTRES[scene.count]
    offset = 8 if scene.size == "small" else 6
    dx, dy = {"centre": (0, 0), "left": (-offset, 0), "right": (offset, 0), "top": (0, -offset), "bottom": (0, offset)}[
        scene.where
    ]
    return [(16 + dx, 16 + dy)]


def _draw(draw: PIL.ImageDraw.ImageDraw, shape: str, cx: int, cy: int, size_px: int, fill) -> None:
    h = size_px // 2
    if shape == "circle":
        draw.ellipse((cx - h, cy - h, cx + h - 1, cy + h - 1), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - h + 1, cy - h + 1, cx + h - 2, cy + h - 2), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - h), (cx - h, cy + h - 1), (cx + h - 1, cy + h - 1)], fill=fill)
    else:
        draw.polygon([(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)], fill=fill)


def render(scene: Scene, rng: random.Random | None = None) -> PIL.Image.Image:
    """Draw `scene` as an RGB image; with `rng`, vary the shade and background (never the geometry)."""
    colour, background = COLOURS[scene.colour], (0, 0, 0)
    if rng is not None:
        colour = tuple(min(255, max(0, v + rng.randint(-_COLOUR_JITTER, _COLOUR_JITTER))) for v in colour)
        background = (rng.randint(0, _BACKGROUND_MAX),) * 3
    image = PIL.Image.new("RGB", (IMAGE_SIZE_PX, IMAGE_SIZE_PX), background)
    draw = PIL.ImageDraw.Draw(image)
    size_px = SIZES_PX["small"] if scene.count > 1 else SIZES_PX[scene.size]
    for cx, cy in _centres(scene):
        _draw(draw, scene.shape, cx, cy, size_px, colour)
    return image


def random_scene(rng: random.Random) -> Scene:
    """Draw a scene: one shape (size and place uniform) 60% of the time, two or three 20% each."""
    shape, colour = rng.choice(SHAPES), rng.choice(sorted(COLOURS))
    count = rng.choices((1, 2, 3), weights=(3, 1, 1))[0]
    if count > 1:
        return Scene(shape, colour, count)
    return Scene(shape, colour, 1, rng.choice(sorted(SIZES_PX)), rng.choice(WHERE))


def make_sample(rng: random.Random) -> tuple[PIL.Image.Image, str]:
    """One random image and its ground-truth caption."""
    scene = random_scene(rng)
    return render(scene, rng), scene.caption


def make_dataset(n: int, seed: int) -> list[tuple[PIL.Image.Image, str]]:
    """`n` (image, caption) pairs, identical for the same seed on any machine (pure-Python RNG)."""
    rng = random.Random(seed)
    return [make_sample(rng) for _ in range(n)]


def write_samples(folder: str | Path, n: int, seed: int, fmt: str = "png") -> dict[str, str]:
    """Save `n` samples as PNG or JPEG files plus `captions.json`; return {file name: caption}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = {"png": "png", "jpeg": "jpg"}[fmt]
    truth = {}
    for i, (image, caption) in enumerate(make_dataset(n, seed)):
        name = f"shapes-{seed}-{i:05d}.{suffix}"
        image.save(folder / name, format=fmt.upper())
        truth[name] = caption
    (folder / "captions.json").write_text(json.dumps(truth, indent=1) + "\n")
    return truth

"""The soak's parts: a stand-in captioner (and its loader), the images with ~1% bad ones, and an agent process
whose log lines and memory (RSS) are followed."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import PIL.Image

from tools.paths import REPO


class SoakCaptioner:
    """Captions by size and mean colour (deterministic), `delay_s` per device batch."""

    def __init__(self, name: str, sha256: str, delay_s: float = 0.005, max_batch: int = 8):
        self.name, self.sha256, self.delay_s, self.max_batch = name, sha256, delay_s, max_batch

    def preprocess(self, images):
        return [(image.size, tuple(int(v) for v in image.resize((1, 1)).getpixel((0, 0)))) for image in images]

    def caption_pixels(self, pixel_values):
        time.sleep(self.delay_s)
        return [f"{self.name}: {w}x{h} {rgb}" for (w, h), rgb in pixel_values]

    def caption(self, images):
        return self.caption_pixels(self.preprocess(images))


def load_soak_captioner(path, device: str = "cpu", expected_sha256: str | None = None, **_):
    """The agent's `captioner_loader` for the soak: a JSON 'artifact' naming the stand-in."""
    from runtime.artifact.checksum import file_sha256

    return SoakCaptioner(sha256=file_sha256(path), **json.loads(Path(path).read_text()))


def png(colour, size) -> bytes:
    out = io.BytesIO()
    PIL.Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def make_images(count: int, bad_share: float, seed: int) -> dict[str, bytes | tuple]:
    """key -> PNG bytes (good: with its (colour, size)) or bad bytes; about `bad_share` of them bad."""
    rng, images = random.Random(seed), {}
    for n in range(count):
        if rng.random() < bad_share:
            images[f"incoming/soak/bad-{n:05d}.png"] = rng.choice([b"", b"not an image", png((1, 2, 3), (9, 9))[:40]])
        else:
            colour, size = (rng.randrange(256), rng.randrange(256), n % 256), (8 + n % 5, 8 + n % 7)
            images[f"incoming/soak/img-{n:05d}.png"] = (colour, size)
    return images


class Agent:
    """One agent process (restartable), its log lines and its RSS."""

    def __init__(self, name: str, config: Path, env: dict):
        self.name, self.config, self.env = name, config, env
        self.lines: list[dict] = []
        self.process: subprocess.Popen | None = None
        self.rss_start_kib: list[int] = []
        self.rss_end_kib: int | None = None
        self.rss_samples: list[tuple[int, int]] = []  # (images done by this process, RSS KiB), every ~10 s
        self.starts = 0

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runtime", "agent", "--config", str(self.config)],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.starts += 1
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()

    def _read(self, process) -> None:
        for line in process.stdout:
            try:
                fields = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.lines.append(fields)
            if fields.get("event") == "started":
                self.rss_start_kib.append(rss_kib(process.pid))

    def rss(self) -> int | None:
        return rss_kib(self.process.pid) if self.process and self.process.poll() is None else None

    def sample(self) -> None:
        rss = self.rss()
        if rss:
            done = next((line["totals"] for line in reversed(list(self.lines)) if line.get("event") == "batch"), {})
            self.rss_samples.append((done.get("done", 0) + done.get("failed", 0), rss))

    def events(self, name: str) -> list[dict]:
        return [line for line in list(self.lines) if line.get("event") == name]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0

"""Image bytes reach only the accepted decoders, in a child whose death or limit costs one image."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import PIL.Image
import pytest

from runtime.errors import BadImage
from runtime.images import formats, load_image
from runtime.untrusted import images, sandbox
from tools.paths import REPO

EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 16 16
%%EndComments
0 0 moveto 16 16 lineto stroke
showpage
%%EOF
"""
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def fake_ghostscript(folder) -> str:
    """A `gs` on PATH that leaves a mark when anything runs it."""
    mark = folder / "gs-ran"
    gs = folder / "gs"
    gs.write_text(f"#!/bin/sh\ntouch {mark}\nexit 1\n")
    gs.chmod(0o755)
    return str(mark)


def run(code: str, folder) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("body", [EPS, PDF], ids=["eps", "pdf"])
def test_a_postscript_or_pdf_body_under_an_image_name_is_an_error_and_starts_no_program(body, tmp_path):
    mark = fake_ghostscript(tmp_path)
    (tmp_path / "photo.png").write_bytes(body)
    done = run(
        f"""
        from runtime.errors import BadImage
        from runtime.images import load_image
        try:
            load_image({str(tmp_path / "photo.png")!r})
        except BadImage as error:
            print("refused:", error)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "not a readable image" in done.stdout
    assert formats.HUMAN_LIST in done.stdout
    assert not os.path.exists(mark), "an external program ran on the image bytes"


def test_without_the_format_list_pillow_would_hand_eps_to_ghostscript(tmp_path):
    """The danger the format list closes, shown on this machine's Pillow (so the test above can fail)."""
    mark = fake_ghostscript(tmp_path)
    run(
        f"""
        import io, PIL.Image
        try:
            PIL.Image.open(io.BytesIO({EPS!r})).load()
        except Exception:
            pass
        """,
        tmp_path,
    )
    assert os.path.exists(mark)


def test_every_accepted_format_decodes_in_the_child_as_it_does_in_process():
    for fmt in formats.PIL_FORMATS:
        buffer = io.BytesIO()
        PIL.Image.new("RGB", (23, 17), (200, 30, 90)).save(buffer, fmt)
        child, here = load_image(buffer.getvalue()), images.decode(buffer.getvalue())
        assert child.size == (23, 17) and child.mode == "RGB" and child.tobytes() == here.tobytes(), fmt


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new("L", size).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_decoder_over_its_memory_limit_costs_one_image_and_the_next_one_decodes():
    pool = sandbox.Sandbox(sandbox.Limits(memory_bytes=300 * 1024**2), keep=1)
    with pytest.raises(
        BadImage,
        match=r"image bytes: the image decoder: needs more memory than the decoder's limit "
        r"of 314,572,800 bytes|image bytes: the image decoder was ended by",
    ):
        images.load(png((9_000, 9_000)), pool=pool)  # 81 M pixels: under max_pixels, over 300 MiB as RGB
    assert images.load(png((8, 8)), pool=pool).size == (8, 8)


def test_the_child_decodes_under_its_address_space_and_cpu_time_limits():
    pool = sandbox.Sandbox(sandbox.Limits(memory_bytes=700 * 1024**2, cpu_s=7), keep=1)
    images.load(png((8, 8)), pool=pool)
    (child,) = pool._idle
    limits = {line[:26].strip(): line[26:].split() for line in open(f"/proc/{child.proc.pid}/limits")}
    assert limits["Max address space"][:2] == [str(700 * 1024**2)] * 2
    assert 7 <= int(limits["Max cpu time"][0]) <= 7 + 3  # the request's allowance on top of what it used
    assert limits["Max core file size"][:2] == ["0", "0"]


def test_a_pooled_child_moves_only_its_soft_cpu_limit_so_it_serves_past_a_second_of_cpu():
    import resource

    pool = sandbox.Sandbox(sandbox.Limits(cpu_s=7), keep=1)
    for _ in range(2):
        images.load(png((8, 8)), pool=pool)
    (child,) = pool._idle
    limits = {line[:26].strip(): line[26:].split() for line in open(f"/proc/{child.proc.pid}/limits")}
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    # a hard limit set per request must rise with the child's CPU time, which needs CAP_SYS_RESOURCE
    assert limits["Max cpu time"][1] == ("unlimited" if hard == resource.RLIM_INFINITY else str(hard))


def test_a_child_ended_by_its_cpu_limit_is_named_and_replaced():
    import signal

    pool = sandbox.Sandbox(sandbox.Limits(), keep=1)
    images.load(png((8, 8)), pool=pool)
    os.kill(pool._idle[0].proc.pid, signal.SIGXCPU)
    pool._idle[0].proc.wait(5)
    assert images.load(png((8, 8)), pool=pool).size == (8, 8)  # a dead idle child is replaced, not used
    child = sandbox._Child(sandbox.Limits())
    os.kill(child.proc.pid, signal.SIGXCPU)
    assert child.death() == "was ended by its CPU time limit (decoder_cpu_s)"


def test_a_stalled_child_is_killed_at_the_wait_limit():
    pool = sandbox.Sandbox(sandbox.Limits(wait_s=0.01), keep=0)
    with pytest.raises(BadImage, match=r"took longer than 0.01 s to answer \(the decoder's wait limit\)"):
        images.load(png((3_000, 3_000)), pool=pool)


def test_the_child_gets_no_aws_credentials(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    child = sandbox._Child(sandbox.Limits())
    try:
        environ = open(f"/proc/{child.proc.pid}/environ", "rb").read()
    finally:
        child.kill()
    assert b"do-not-leak" not in environ

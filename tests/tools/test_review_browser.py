"""The review pages in a real browser (headless Chromium): rows rendered, the errors-only filter, the search, the
side-by-side comparison, hostile captions shown as text; and `make compare` on two real tiny artifacts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import PIL.Image
import pytest

from browser import Articles, dump_dom, needs_chromium, screenshot
from tools import compare, gallery
from tools.review_page import Cell, mark_differences

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (30, 60, 220), "cat": (240, 200, 40)}
HOSTILE = "<script>document.title='pwned'</script></script><img src=x onerror=\"document.title='pwned'\">"


def caption_run(folder: Path) -> Path:
    """A local caption run in the row contract: four images, one caption naming a cat, one error row."""
    rows = []
    for name, colour in COLOURS.items():
        PIL.Image.new("RGB", (320, 240), colour).save(folder / f"{name}.png")
        rows.append(
            {
                "uri": str(folder / f"{name}.png"),
                "key": f"{name}.png",
                "caption": f"a {name} block",
                "error": None,
                "model": "demo-model",
                "model_sha256": "ab" * 32,
            }
        )
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    rows.append(
        {
            "uri": str(folder / "broken.jpg"),
            "key": "broken.jpg",
            "caption": None,
            "error": "corrupt image data",
            "model": "demo-model",
            "model_sha256": "ab" * 32,
        }
    )
    rows.append(
        {
            "uri": str(folder / "red.png"),
            "key": "</script>odd.png",
            "caption": HOSTILE,
            "error": None,
            "model": "demo-model",
            "model_sha256": "ab" * 32,
        }
    )
    out = folder / "captions.jsonl"
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return out


@needs_chromium
def test_the_gallery_in_chromium_shows_every_row_then_only_errors_then_a_search(tmp_path):
    page = tmp_path / "gallery.html"
    assert gallery.main([str(caption_run(tmp_path)), "--out", str(page)]) == 0

    everything = Articles(dump_dom(page))
    assert [item["key"] for item in everything.visible()] == [
        "red.png",
        "green.png",
        "blue.png",
        "cat.png",
        "broken.jpg",
        "</script>odd.png",
    ]
    assert everything.items[0]["cells"] == ["a red block"] and everything.shown == "6 of 6 shown"
    text = page.read_text()
    assert text.count('<img class="thumb"') == 5  # the broken JPEG has none; the others were decoded
    links = re.findall(r'(?:src|href|action)="([^"]*)"', text)
    assert len(links) == 5 and all(link.startswith("data:image/jpeg;base64,") for link in links)
    assert "default-src &#x27;none&#x27;" in text and "http" not in text.replace("http-equiv", "")

    errors = Articles(dump_dom(page, "#errors"))
    assert [item["key"] for item in errors.visible()] == ["broken.jpg"]
    assert errors.visible()[0]["cells"] == ["corrupt image data"] and errors.shown == "1 of 6 shown"

    search = Articles(dump_dom(page, "#q=CAT"))  # case-insensitive, over keys, captions and errors
    assert [item["key"] for item in search.visible()] == ["cat.png"]
    assert Articles(dump_dom(page, "#errors&q=cat")).visible() == []
    screenshot(page, tmp_path / "gallery.png")


@needs_chromium
def test_a_caption_and_key_full_of_html_are_shown_as_text_and_never_run(tmp_path):
    page = tmp_path / "gallery.html"
    gallery.main([str(caption_run(tmp_path)), "--out", str(page)])
    text = page.read_text()
    assert text.count("<script>") == 1 and "onerror=" not in text.replace("onerror=&quot;", "")

    dom = Articles(dump_dom(page))
    assert dom.title.startswith("captions of") and dom.scripts == 1  # no injected script element, none ran
    hostile = next(item for item in dom.items if item["key"] == "</script>odd.png")
    assert hostile["cells"] == [HOSTILE]


def test_a_missing_rows_file_or_a_source_too_many_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"^gallery: .*missing.jsonl: no such file"):
        gallery.main([str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "g.html")])
    with pytest.raises(SystemExit):
        gallery.main([str(tmp_path / "a.jsonl"), "--job", "j1"])
    assert "give exactly one of" in capsys.readouterr().err and not (tmp_path / "g.html").exists()


def run(name: str, captions: list[str | None], images_per_s: float) -> compare.Run:
    return compare.Run(Path(f"{name}.pt2"), name, name * 8, None, captions, images_per_s)


@needs_chromium
def test_the_comparison_in_chromium_puts_models_side_by_side_and_marks_the_differences(tmp_path):
    files = []
    for name, colour in COLOURS.items():
        files.append(tmp_path / f"{name}.png")
        PIL.Image.new("RGB", (64, 64), colour).save(files[-1])
    errors = [None, None, None, "not a readable image"]
    runs = [
        run("alpha", ["a red block", "a green block", "a blue block", None], 12.5),
        run("beta", ["a red block", "a green square block", "a large blue block", None], 3.25),
    ]
    text, summary = compare.page(files, errors, runs, [f.name for f in files])
    page = tmp_path / "compare.html"
    page.write_text(text, encoding="utf-8")

    assert (summary["captioned"], summary["differ"], summary["differ_share"]) == (3, 2, 0.6667)
    dom = Articles(dump_dom(page))
    assert [item["cells"] for item in dom.items[:3]] == [
        ["a red block", "a red block"],
        ["a green block", "a green square block"],
        ["a blue block", "a large blue block"],
    ]
    assert ["differs" in item["classes"] for item in dom.items] == [False, True, True, False]
    assert dom.items[1]["marks"] == ["square"] and dom.items[2]["marks"] == ["large"]
    assert dom.items[3]["cells"] == ["not a readable image"] * 2
    assert re.search(r"alpha</td><td>alpha\.pt2</td>.*<td>12\.5</td>", text)
    assert "captions differ on 2 of 3 (67%)" in text

    only = Articles(dump_dom(page, "#diff"))
    assert [item["key"] for item in only.visible()] == ["green.png", "blue.png"]
    screenshot(page, tmp_path / "compare.png")


def test_differences_are_marked_in_every_caption_against_the_first():
    cells = [
        Cell("a red circle on the left", None),
        Cell("a red square on the left", None),
        Cell("a red circle on the left", None),
    ]
    mark_differences(cells)
    words = [[c.caption.split()[i] for i in sorted(c.marked)] for c in cells]
    assert words == [["circle"], ["square"], []]


@needs_chromium
def test_make_compare_captions_a_folder_with_two_real_artifacts(tiny_artifact, tiny_deit_artifact, tmp_path, capsys):
    from runtime.captioner import load_captioner
    from runtime.errors import BadImage
    from runtime.images import load_image

    images = tmp_path / "photos"
    (images / "sub").mkdir(parents=True)
    for i, colour in enumerate(COLOURS.values()):
        PIL.Image.new("RGB", (48 + 8 * i, 40), colour).save(images / ("sub" if i % 2 else ".") / f"{i}.png")
    (images / "notes.txt").write_text("not an image")
    (images / "broken.png").write_bytes(b"\x89PNG but nothing more")
    page = tmp_path / "compare.html"
    code = compare.main(
        [
            str(tiny_artifact),
            str(tiny_deit_artifact),
            "--images",
            str(images),
            "--out",
            str(page),
            "--device",
            "cpu",
            "--cache",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    files = [images / "0.png", images / "2.png", images / "sub/1.png", images / "sub/3.png"]
    expected = [
        load_captioner(a, "cpu", cache_dir=tmp_path / "cache").caption([load_image(f) for f in files])
        for a in (tiny_artifact, tiny_deit_artifact)
    ]
    dom = Articles(dump_dom(page))
    assert [item["key"] for item in dom.items] == ["0.png", "2.png", "broken.png", "sub/1.png", "sub/3.png"]
    broken = dom.items.pop(2)
    with pytest.raises(BadImage) as refused:
        load_image(images / "broken.png")
    assert "err" in broken["classes"] and broken["cells"] == [str(refused.value)] * 2
    assert [item["cells"] for item in dom.items] == [list(pair) for pair in zip(*expected)]
    differ = [a != b for a, b in zip(*expected)]
    assert ["differs" in item["classes"] for item in dom.items] == differ and summary["differ"] == sum(differ)
    assert (summary["images"], summary["captioned"], summary["skipped_not_images"]) == (5, 4, 1)
    assert all(m["images_per_s"] > 0 for m in summary["models"])
    assert page.read_text().count('<img class="thumb"') == 4
    assert re.search(r"<td>vit-gpt2\.pt2</td><td>[0-9a-f]{12}</td><td>-</td><td>\d+\.\d</td>", page.read_text())


def test_make_compare_of_one_model_exported_with_two_prompts_names_each_prompt(
    tiny_qwen2_vl_dir, tiny_qwen2_vl_artifact, tmp_path, capsys
):
    from checkpoints.qwen_vl_tiny import IMAGE_SIZE
    from export.cli import main as export

    other = tmp_path / "qwen2-vl-other-prompt.pt2"
    assert (
        export(
            [
                "--model",
                str(tiny_qwen2_vl_dir),
                "--out",
                str(other),
                "--max-batch",
                "8",
                "--image-size",
                str(IMAGE_SIZE["qwen2_vl"]),
                "--prompt",
                "What colour is it? <b>One word.</b>",
            ]
        )
        == 0
    )
    capsys.readouterr()
    images = tmp_path / "photos"
    images.mkdir()
    for name, colour in COLOURS.items():
        PIL.Image.new("RGB", (56, 56), colour).save(images / f"{name}.png")
    page = tmp_path / "compare.html"
    assert (
        compare.main(
            [
                str(tiny_qwen2_vl_artifact),
                str(other),
                "--images",
                str(images),
                "--out",
                str(page),
                "--device",
                "cpu",
                "--cache",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert [m["prompt"] for m in summary["models"]] == [
        "Caption the picture in a few words.",
        "What colour is it? <b>One word.</b>",
    ]
    text = page.read_text()
    assert "<td>Caption the picture in a few words.</td>" in text
    assert "<td>What colour is it? &lt;b&gt;One word.&lt;/b&gt;</td>" in text
    assert text.count('<article class="item') == 4

"""The review page's inputs: rows files in the three formats, the seeded sample, thumbnails decoded in a limited
child, and rows with their images from an S3 prefix's results and from a dataset job's outputs and shard members."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import tarfile
import uuid

import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_folder import RUN1, Folder
from runtime.agent.results import SCHEMA
from runtime.aws import client as aws_client
from runtime.errors import BadImage
from runtime.images import load_image
from tools import review_images
from tools.review_rows import ROW_COLUMNS, RowsError, read_rows, sample
from tools.thumbnails import THUMB_PX, Thumb, thumbnail, thumbnails

ROWS = [
    {
        "uri": "/photos/café.jpg",
        "key": "café.jpg",
        "caption": "un chat </script>",
        "error": None,
        "model": "m",
        "model_sha256": "ab" * 32,
    },
    {
        "uri": "/photos/bad.png",
        "key": "bad.png",
        "caption": None,
        "error": "not a readable image",
        "model": "m",
        "model_sha256": "ab" * 32,
    },
]


def png(colour: tuple[int, int, int], size: tuple[int, int] = (400, 300)) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def decoded(src: str) -> PIL.Image.Image:
    assert src.startswith("data:image/jpeg;base64,")
    return PIL.Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))


def write(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".csv":
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=[*ROW_COLUMNS, "extra"])
            writer.writeheader()
            writer.writerows({**r, "extra": "x"} for r in rows)
    else:
        pq.write_table(pa.Table.from_pylist([{**r, "extra": "x"} for r in rows]), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_rows_read_the_same_from_jsonl_csv_and_parquet(tmp_path, suffix):
    rows = list(read_rows(write(tmp_path / f"captions{suffix}", ROWS)))
    assert [{k: r[k] for k in ROW_COLUMNS} for r in rows] == ROWS


def test_a_rows_file_of_another_shape_or_extension_is_refused_saying_what_was_expected(tmp_path):
    with pytest.raises(RowsError, match=r"row 1 lacks \['uri', 'key'\]"):
        list(
            read_rows(
                write(
                    tmp_path / "old.jsonl",
                    [{"image": "a.jpg", "caption": "x", "error": None, "model": "m", "model_sha256": "s"}],
                )
            )
        )
    with pytest.raises(RowsError, match="not '.json'"):
        list(read_rows(tmp_path / "captions.json"))
    with pytest.raises(RowsError, match="no such file"):
        list(read_rows(tmp_path / "missing.csv"))


def test_the_sample_is_reproducible_in_input_order_and_a_new_seed_draws_another():
    rows = [{"uri": f"s3://b/{i}.jpg", "model_sha256": "ab"} for i in range(1000)]
    chosen, total = sample(iter(rows), 50, seed=7)
    assert total == 1000 and len(chosen) == 50
    assert chosen == sample(reversed(rows), 50, seed=7)[0][::-1]  # the rows decide, not their order
    assert [rows.index(r) for r in chosen] == sorted(rows.index(r) for r in chosen)
    assert chosen != sample(rows, 50, seed=8)[0]
    assert sample(rows[:10], 50)[0] == rows[:10] and sample(rows, None) == (rows, 1000)


def test_a_thumbnail_is_a_small_jpeg_of_the_image():
    image = decoded(thumbnail(png((200, 10, 10), (800, 400))))
    assert image.format == "JPEG" and image.size == (THUMB_PX, THUMB_PX // 2)
    assert max(abs(a - b) for a, b in zip(image.getpixel((80, 40)), (200, 10, 10))) < 12


def test_a_bad_image_costs_only_its_own_thumbnail():
    thumbs = thumbnails([png((0, 0, 255)), None, b"not an image", png((0, 255, 0))])
    assert thumbs[0].src and thumbs[3].src and thumbs[1] == Thumb()
    with pytest.raises(BadImage) as refused:
        load_image(b"not an image")
    assert thumbs[2].error == str(refused.value)[:300]


@pytest.fixture
def s3(aws):
    return aws_client("s3")


def test_a_prefix_gives_its_result_records_as_rows_with_their_images(s3):
    images, results = f"img-{uuid.uuid4().hex[:8]}", f"res-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=images)
    s3.create_bucket(Bucket=results)
    for name, colour in (("a.png", (250, 0, 0)), ("b.png", (0, 0, 250))):
        s3.put_object(Bucket=images, Key=f"incoming/{name}", Body=png(colour))
        s3.put_object(
            Bucket=results,
            Key=f"results/incoming/{name}.json",
            Body=json.dumps(
                {
                    "schema": SCHEMA,
                    "status": "ok",
                    "caption": f"caption of {name}",
                    "model": {"name": "m", "sha256": "s"},
                    "source": {"bucket": images, "key": f"incoming/{name}"},
                }
            ),
        )
    s3.put_object(
        Bucket=results,
        Key="results/incoming/c.png.json",
        Body=json.dumps(
            {
                "schema": SCHEMA,
                "status": "error",
                "error": "not a readable image",
                "model": {"name": "m", "sha256": "s"},
                "source": {"bucket": images, "key": "incoming/c.png"},
            }
        ),
    )
    pairs, total = review_images.prefix(
        s3, f"s3://{images}/incoming/", None, 0, results_bucket=results, results_prefix="results/"
    )
    pairs = list(pairs)
    assert total == 3
    assert [(r["uri"], r["caption"], r["error"]) for r, _ in pairs] == [
        (f"s3://{images}/incoming/a.png", "caption of a.png", None),
        (f"s3://{images}/incoming/b.png", "caption of b.png", None),
        (f"s3://{images}/incoming/c.png", None, "not a readable image"),
    ]
    assert [PIL.Image.open(io.BytesIO(data)).getpixel((0, 0)) for _, data in pairs[:2]] == [(250, 0, 0), (0, 0, 250)]
    assert pairs[2][1] is None
    assert (
        len(
            list(
                review_images.prefix(
                    s3, f"s3://{images}/incoming/", 2, 0, results_bucket=results, results_prefix="results/"
                )[0]
            )
        )
        == 2
    )


def shard(kind: str, index: int, colours: list[tuple[int, int, int]]) -> bytes:
    """A webdataset tar (`<key>.png` members) or a Parquet file (`key`, binary `image`) of 64 px images."""
    keys, images = [f"{index}-{n:04d}" for n in range(len(colours))], [png(c, (64, 64)) for c in colours]
    buffer = io.BytesIO()
    if kind == "parquet":
        pq.write_table(pa.table({"key": keys, "image": pa.array(images, pa.binary())}), buffer)
        return buffer.getvalue()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for key, data in zip(keys, images):
            info = tarfile.TarInfo(f"{key}.png")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["tar", "parquet"])
def test_a_dataset_job_gives_its_output_rows_with_thumbnails_from_the_right_shard_members(s3, kind):
    bucket = f"res-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    if "data" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:  # Folder's shards are s3://data/set/..
        s3.create_bucket(Bucket="data")
    folder = Folder(s3, bucket, 2)
    folder.uris = [uri.replace(".tar", f".{kind}") for uri in folder.uris]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=folder.root + "manifest.json")["Body"].read())
    manifest["shards"] = [{"uri": uri, "format": kind, "size": 1000} for uri in folder.uris]
    folder.put(folder.root + "manifest.json", manifest)
    colours = {0: [(255, 0, 0), (0, 255, 0), (0, 0, 255)], 1: [(255, 255, 0), (0, 255, 255), (255, 0, 255)]}
    for index, shard_colours in colours.items():
        s3.put_object(Bucket="data", Key=f"set/{index:05d}.{kind}", Body=shard(kind, index, shard_colours))
        folder.finish(index, RUN1, samples=3, errors=1 if index == 1 else 0)
    pairs, total = review_images.job(s3, folder.job_id, None, 0, results_bucket=bucket, results_prefix="results/")
    pairs = list(pairs)
    assert total == 6
    assert [r["key"] for r, _ in pairs] == ["0-0000", "0-0001", "0-0002", "1-0000", "1-0001", "1-0002"]
    assert [r["error"] for r, _ in pairs][3] == "cannot decode the image" and pairs[4][0]["caption"] == "caption 1"
    thumbs = thumbnails([data for _, data in pairs])
    centres = [decoded(t.src).getpixel((32, 32)) for t in thumbs]  # 64 px images: a thumbnail never enlarges
    expected = colours[0] + colours[1]
    assert all(max(abs(a - b) for a, b in zip(got, want)) < 12 for got, want in zip(centres, expected)), centres
    sampled, total = review_images.job(s3, folder.job_id, 2, 5, results_bucket=bucket, results_prefix="results/")
    sampled = list(sampled)
    assert total == 6 and len(sampled) == 2 and all(data is not None for _, data in sampled)


def test_a_job_that_listed_images_gives_their_result_records_and_images(s3):
    bucket = f"res-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    uris = []
    for name, colour in (("x.png", (200, 0, 0)), ("y.png", (0, 200, 0))):
        s3.put_object(Bucket=bucket, Key=f"incoming/{name}", Body=png(colour))
        uris.append(f"s3://{bucket}/incoming/{name}")
    s3.put_object(
        Bucket=bucket,
        Key="results/incoming/x.png.json",
        Body=json.dumps(
            {
                "schema": SCHEMA,
                "status": "ok",
                "caption": "a red one",
                "model": {"name": "m", "sha256": "s"},
                "source": {"bucket": bucket, "key": "incoming/x.png"},
            }
        ),
    )
    s3.put_object(Bucket=bucket, Key="results/_jobs/j1/manifest.json", Body=json.dumps({"images": uris}))
    pairs, total = review_images.job(s3, "j1", None, 0, results_bucket=bucket, results_prefix="results/")
    pairs = list(pairs)
    assert total == 2 and pairs[0][0]["caption"] == "a red one" and pairs[0][1] == png((200, 0, 0))
    assert "never captioned" in pairs[1][0]["error"] and pairs[1][1] is None


def test_make_gallery_of_a_dataset_job_through_the_stack_outputs_writes_a_sampled_page(
    s3, monkeypatch, tmp_path, capsys
):
    from tools import gallery, outputs, target

    bucket = f"res-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    if "data" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket="data")
    folder = Folder(s3, bucket, 3)
    for index in range(3):
        s3.put_object(Bucket="data", Key=f"set/{index:05d}.tar", Body=shard("tar", index, [(9, 9, 9)] * 5))
        folder.finish(index, RUN1, samples=5, errors=1)
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.setattr(target, "resolve", lambda _name=None: target.Target("CaptionKit", "us-east-1", endpoint))
    monkeypatch.setattr(outputs, "stack_outputs", lambda *_a: {"ResultsBucket": bucket, "ResultsPrefix": "results/"})
    page = tmp_path / "job.html"
    assert gallery.main(["--job", folder.job_id, "--out", str(page), "--sample", "6", "--seed", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["shown"], report["rows"]) == (6, 15)
    text = page.read_text()
    assert text.count('<article class="item') == 6 and text.count('<img class="thumb"') == 6
    assert "6 images (a seeded sample of 15 rows)" in text
    assert gallery.main(["--job", folder.job_id, "--out", str(page), "--sample", "6", "--seed", "2"]) == 0
    assert page.read_text() == text and "replaced the earlier" in capsys.readouterr().err

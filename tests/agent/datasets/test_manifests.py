"""Manifests of keys on moto: text, CSV, Parquet and S3 Inventory (CSV.gz and Parquet), read bounded and in scope."""

from __future__ import annotations

import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.agent.scope import Scope
from runtime.errors import PlanError
from runtime.untrusted.manifests import MAX_LINE_BYTES, iter_uris

MAX = 1024 * 1024


@pytest.fixture
def env(stack):
    """(stack, scope): the images bucket's incoming/ and a second dataset bucket as the workers' sources."""
    other = f"data-{stack.id}"
    stack.s3.create_bucket(Bucket=other)
    stack.other = other
    return stack, Scope(stack.images, "incoming/", (stack.images, "results/"), (f"s3://{other}/sets/",))


def _uris(stack, scope, key: str, body: bytes, bucket=None, **options) -> list[str]:
    stack.s3.put_object(Bucket=bucket or stack.images, Key=key, Body=body)
    return list(iter_uris(stack.s3, f"s3://{bucket or stack.images}/{key}", scope, max_bytes=MAX, **options))


def _parquet(**columns) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out, row_group_size=2)
    return out.getvalue()


def test_a_text_manifest_of_keys_and_uris(env):
    stack, scope = env
    body = (f"incoming/a.png\r\n\ns3://{stack.other}/sets/b.jpg\nincoming/dir/c d.png\n").encode()
    assert _uris(stack, scope, "incoming/list.txt", body) == [
        f"s3://{stack.images}/incoming/a.png",
        f"s3://{stack.other}/sets/b.jpg",
        f"s3://{stack.images}/incoming/dir/c d.png",
    ]


def test_a_header_row_is_allowed_and_a_key_column_is_picked(env):
    stack, scope = env
    assert _uris(stack, scope, "incoming/k.csv", b"key\nincoming/a.png\nincoming/b.png") == [
        f"s3://{stack.images}/incoming/a.png",
        f"s3://{stack.images}/incoming/b.png",
    ]
    body = b'id,caption,file\n1,"a, b",incoming/x.png\n2,c,"incoming/y,z.png"\n'
    assert _uris(stack, scope, "incoming/named.csv", body, key_column="file") == [
        f"s3://{stack.images}/incoming/x.png",
        f"s3://{stack.images}/incoming/y,z.png",
    ]


def test_bucket_key_rows_as_s3_inventory_writes_them(env):
    stack, scope = env
    body = f'"{stack.images}","incoming/a%20b.png","12"\n"{stack.other}","sets/c.png","7"\n'.encode()
    assert _uris(stack, scope, "incoming/rows.csv", body) == [  # a user's CSV: keys taken as written
        f"s3://{stack.images}/incoming/a%20b.png",
        f"s3://{stack.other}/sets/c.png",
    ]
    header = f"bucket,key\n{stack.other},sets/d.png\n".encode()
    assert _uris(stack, scope, "incoming/hdr.csv", header) == [f"s3://{stack.other}/sets/d.png"]


def test_a_parquet_manifest_with_a_guessed_or_named_key_column(env):
    stack, scope = env
    uris = [f"s3://{stack.images}/incoming/{n}.png" for n in range(5)]
    assert _uris(stack, scope, "incoming/k.parquet", _parquet(uri=uris, n=list(range(5)))) == uris
    body = _parquet(image_path=[f"incoming/{n}.png" for n in range(3)])
    assert _uris(stack, scope, "incoming/p.parquet", body, key_column="image_path") == uris[:3]
    with pytest.raises(PlanError, match="no key column"):
        _uris(stack, scope, "incoming/p.parquet", body)


def _inventory(stack, fmt: str, files: list[tuple[str, bytes]], schema="Bucket, Key, Size") -> str:
    for key, body in files:
        stack.s3.put_object(Bucket=stack.other, Key=key, Body=body)
    report = {
        "sourceBucket": stack.images,
        "destinationBucket": f"arn:aws:s3:::{stack.other}",
        "version": "2016-11-30",
        "fileFormat": fmt,
        "fileSchema": schema,
        "files": [{"key": key, "size": len(body), "MD5checksum": "x"} for key, body in files],
    }
    key = "sets/inv/2024-01-01T00-00Z/manifest.json"
    stack.s3.put_object(Bucket=stack.other, Key=key, Body=json.dumps(report).encode())
    return f"s3://{stack.other}/{key}"


def test_an_s3_inventory_of_gzip_csv_files_with_url_encoded_keys(env):
    stack, scope = env
    first = gzip.compress(f'"{stack.images}","incoming/a+b%C3%A9.png","3"\n'.encode())
    second = gzip.compress(
        f'"{stack.images}","incoming/c%2Bd.png","4"\n"{stack.images}","incoming/e.png","5"\n'.encode()
    )
    uri = _inventory(stack, "CSV", [("sets/inv/data/1.csv.gz", first), ("sets/inv/data/2.csv.gz", second)])
    assert list(iter_uris(stack.s3, uri, scope, max_bytes=MAX)) == [
        f"s3://{stack.images}/incoming/a bé.png",
        f"s3://{stack.images}/incoming/c+d.png",
        f"s3://{stack.images}/incoming/e.png",
    ]


def test_an_s3_inventory_of_parquet_files(env):
    stack, scope = env
    body = _parquet(bucket=[stack.images, stack.other], key=["incoming/a b.png", "sets/x.png"], size=[1, 2])
    uri = _inventory(stack, "Parquet", [("sets/inv/data/1.parquet", body)])
    assert list(iter_uris(stack.s3, uri, scope, max_bytes=MAX)) == [
        f"s3://{stack.images}/incoming/a b.png",
        f"s3://{stack.other}/sets/x.png",
    ]


def test_orc_is_refused_with_the_reason(env):
    stack, scope = env
    uri = _inventory(stack, "ORC", [("sets/inv/data/1.orc", b"ORC")])
    with pytest.raises(PlanError, match="'ORC' format; only CSV and Parquet"):
        list(iter_uris(stack.s3, uri, scope, max_bytes=MAX))
    with pytest.raises(PlanError, match="ORC manifests are not read"):
        _uris(stack, scope, "incoming/keys.orc", b"ORC")


def test_an_out_of_scope_key_is_refused_with_its_line(env):
    stack, scope = env
    body = b"incoming/a.png\nincoming/b.png\n\nelsewhere/c.png\nincoming/d.png\n"
    with pytest.raises(PlanError, match=r"keys.txt line 4: .*elsewhere/c.png is outside the images prefix"):
        _uris(stack, scope, "incoming/keys.txt", body)
    with pytest.raises(PlanError, match=r"own.txt line 1: .*results/x.png.json is outside the images prefix"):
        _uris(stack, scope, "incoming/own.txt", b"results/x.png.json\n")
    rows = gzip.compress(b'"elsewhere","k.png"\n')
    with pytest.raises(PlanError, match=r"1.csv.gz line 1: s3://elsewhere/k.png is not in the images bucket"):
        list(iter_uris(stack.s3, _inventory(stack, "CSV", [("sets/inv/data/1.csv.gz", rows)]), scope, max_bytes=MAX))
    with pytest.raises(PlanError, match="row 2: .*outside the images prefix"):
        _uris(stack, scope, "incoming/bad.parquet", _parquet(key=["incoming/a.png", "other/b.png"]))


def test_a_manifest_outside_the_scope_is_not_read(env):
    stack, scope = env
    with pytest.raises(PlanError, match="outside the images prefix"):
        _uris(stack, scope, "private/keys.txt", b"incoming/a.png\n")


def test_a_too_large_manifest_is_refused(env):
    stack, scope = env
    body = b"".join(f"incoming/{n:06d}.png\n".encode() for n in range(2000))
    stack.s3.put_object(Bucket=stack.images, Key="incoming/big.txt", Body=body)
    with pytest.raises(PlanError, match="over max_manifest_bytes"):
        list(iter_uris(stack.s3, f"s3://{stack.images}/incoming/big.txt", scope, max_bytes=len(body) - 1))
    assert len(list(iter_uris(stack.s3, f"s3://{stack.images}/incoming/big.txt", scope, max_bytes=len(body)))) == 2000
    stack.s3.put_object(Bucket=stack.images, Key="incoming/bomb.txt.gz", Body=gzip.compress(b"\n" * 10 * MAX))
    with pytest.raises(PlanError, match=r"\(decompressed\) is over max_manifest_bytes"):
        list(iter_uris(stack.s3, f"s3://{stack.images}/incoming/bomb.txt.gz", scope, max_bytes=MAX))


def test_a_long_line_or_bytes_that_are_not_text_are_refused(env):
    stack, scope = env
    with pytest.raises(PlanError, match=f"line 2: over {MAX_LINE_BYTES:,} bytes"):
        _uris(stack, scope, "incoming/long.txt", b"incoming/a.png\n" + b"x" * (3 * MAX_LINE_BYTES))
    with pytest.raises(PlanError, match="line 1: not UTF-8"):
        _uris(stack, scope, "incoming/bin.txt", b"\xff\xfe\x00incoming\n")
    with pytest.raises(PlanError, match="line 1: .*names a folder"):
        _uris(stack, scope, "incoming/dir.txt", b"incoming/dir/\n")


def test_a_file_named_parquet_that_is_not_one_is_refused(env):
    stack, scope = env
    with pytest.raises(PlanError, match="not a Parquet file"):
        _uris(stack, scope, "incoming/k.parquet", b"key\nincoming/a.png\n")
    forged = _parquet(key=["incoming/a.png"])[:-8] + (10**9).to_bytes(4, "little") + b"PAR1"
    with pytest.raises(PlanError, match="not a usable Parquet file: a footer of 1,000,000,000 bytes"):
        _uris(stack, scope, "incoming/f.parquet", forged)


def test_a_parquet_manifest_repeating_one_long_key_by_dictionary_is_never_expanded(env):
    stack, scope = env
    key = "incoming/" + "k" * 1000 + ".png"
    out = io.BytesIO()
    pq.write_table(pa.table({"key": [key] * 100_000}), out, use_dictionary=True, compression="zstd")
    assert len(out.getvalue()) < 100_000  # dense, its one row group decodes to 100 MB
    stack.s3.put_object(Bucket=stack.images, Key="incoming/long.parquet", Body=out.getvalue())
    uris = iter_uris(stack.s3, f"s3://{stack.images}/incoming/long.parquet", scope, max_bytes=MAX)
    assert next(uris) == f"s3://{stack.images}/{key}"
    held = pa.total_allocated_bytes()
    assert held < 20_000_000, f"{held:,} bytes held by Arrow for one row group"
    assert sum(1 for _ in uris) == 99_999


def test_a_quoted_field_holding_a_newline_is_one_key_as_csv_reads_it(env):
    stack, scope = env
    body = b'key,caption\n"incoming/a\nb.png","one\nline, two"\nincoming/c.png,x\n\n"incoming/d,e.png",y\n'
    assert _uris(stack, scope, "incoming/quoted.csv", body) == [
        f"s3://{stack.images}/incoming/a\nb.png",
        f"s3://{stack.images}/incoming/c.png",
        f"s3://{stack.images}/incoming/d,e.png",
    ]
    assert _uris(stack, scope, "incoming/plain.csv", b'"incoming/f\ng.png"\nincoming/h.png\n') == [
        f"s3://{stack.images}/incoming/f\ng.png",
        f"s3://{stack.images}/incoming/h.png",
    ]


def test_a_quote_left_open_is_refused_at_its_line_not_read_to_the_end(env):
    stack, scope = env
    body = b"incoming/a.png\n" + b'"incoming/open.png\n' + b"incoming/x.png\n" * 10_000
    with pytest.raises(PlanError, match=r"line 2: a row over 4,096 characters"):
        _uris(stack, scope, "incoming/open.csv", body)

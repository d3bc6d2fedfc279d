"""The streaming webdataset reader on sparse members: GNU sparse tars as GNU tar writes them, pax 0.x/1.0 maps."""

from __future__ import annotations

import io
import subprocess
import tarfile

import pytest
from tar_bytes import END, MB, make_tar, padded, samples


def _gnu_tar_sparse(tmp_path, version: str, regions: int) -> tuple[bytes, dict[str, bytes]]:
    """A shard made by the real `tar --sparse` around a file of `regions` data regions, and what tarfile reads."""
    import shutil

    if (
        not shutil.which("tar")
        or "GNU tar" not in subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout
    ):
        pytest.skip("GNU tar is not installed")
    (tmp_path / "000000.png").write_bytes(b"first")
    sparse = tmp_path / "000001.png"
    subprocess.run(["truncate", "-s", str(regions * 64 * 1024), str(sparse)], check=True)
    with open(sparse, "r+b") as f:
        for n in range(regions):
            f.seek(n * 64 * 1024 + 100)
            f.write(b"region %d " % n * 50)
    (tmp_path / "000001.txt").write_bytes(b"caption")
    (tmp_path / "000002.png").write_bytes(b"after")
    fmt = ["--format=gnu"] if version == "gnu" else ["--format=pax", f"--sparse-version={version}"]
    subprocess.run(
        ["tar", "--sparse", *fmt, "-cf", "shard.tar", "000000.png", "000001.png", "000001.txt", "000002.png"],
        cwd=tmp_path,
        check=True,
    )
    data = (tmp_path / "shard.tar").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive}
        assert archive.getmember("000001.png").sparse and len(archive.getmember("000001.png").sparse) >= regions
    return data, members


@pytest.mark.parametrize("version", ["gnu", "0.0", "0.1", "1.0"])
def test_a_gnu_sparse_member_of_many_regions_reads_as_tarfile_reads_it(tmp_path, version):
    data, members = _gnu_tar_sparse(tmp_path, version, regions=30)  # gnu: the header's 4, then two extension blocks
    assert [(s.key, s.data, s.error) for s in samples(data, max_member_bytes=4 * MB)] == [
        ("000000", b"first", None),
        ("000001", members["000001.png"], None),
        ("000002", b"after", None),
    ]
    assert len(members["000001.png"]) == 30 * 64 * 1024 and members["000001.png"].count(b"region 29 ") == 50


def test_a_sparse_image_over_the_limit_is_an_error_row_naming_its_real_size(tmp_path):
    data, _ = _gnu_tar_sparse(tmp_path, "gnu", regions=30)
    result = samples(data, max_member_bytes=MB)
    assert [s.key for s in result] == ["000000", "000001", "000002"] and result[2].data == b"after"
    assert result[1].error == f"the .png member is {30 * 64 * 1024:,} bytes, over the limit of {MB:,} (max_image_bytes)"


def _pax_sparse(member: str, data: bytes, **records: str) -> bytes:
    info = tarfile.TarInfo(f"./GNUSparseFile.1/{member}")
    info.size, info.pax_headers = len(data), {f"GNU.sparse.{k}": v for k, v in records.items()}
    return info.tobuf(tarfile.PAX_FORMAT) + padded(data)


@pytest.mark.parametrize(
    "records, data, why",
    [
        ({"map": "0,4,2,4", "size": "10"}, b"abcdefgh", "regions overlap"),
        ({"map": "0,4,8,4", "size": "10"}, b"abcdefgh", "pass its size"),
        ({"map": "0,4,6", "size": "10"}, b"abcd", "not pairs of decimal numbers"),
        ({"map": "0,4", "size": "10"}, b"abcdefgh", "do not add up to its 8 bytes"),
        ({"map": "0,4"}, b"abcd", "without its real size"),
        (
            {"major": "1", "minor": "0", "realsize": "10"},
            b"99999999\n" + bytes(503),
            "of 99,999,999 regions, over 1,024",
        ),
        ({"major": "1", "minor": "0", "realsize": "10"}, b"1\n0\nx\n" + bytes(506), "map is not decimal numbers"),
        ({"major": "2", "minor": "0", "realsize": "10"}, b"", "other than 0.0, 0.1 and 1.0"),
    ],
)
def test_a_sparse_member_whose_map_is_not_valid_is_an_error_row_and_the_shard_goes_on(records, data, why):
    shard = _pax_sparse("000000.png", data, name="000000.png", **records) + make_tar([("000001.png", b"next")])
    first, second = samples(shard)
    assert (
        first.key == "000000"
        and first.data is None
        and why in first.error
        and first.error.startswith("the .png member is a GNU sparse file")
    )
    assert (second.key, second.data) == ("000001", b"next")


def test_a_pax_1_0_sparse_member_reads_its_map_from_its_data():
    body = b"2\n0\n3\n7\n2\n".ljust(512, b"\x00") + b"abcXY"
    shard = _pax_sparse("000000.png", body, name="000000.png", major="1", minor="0", realsize="9")
    assert samples(shard + END)[0].data == b"abc\x00\x00\x00\x00XY"

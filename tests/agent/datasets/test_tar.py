"""The streaming webdataset reader: real tars from tarfile in each format, crafted headers, hostile bytes, memory."""

from __future__ import annotations

import io
import os
import tarfile

import pytest
from tar_bytes import END, FORMATS, MB, header, make_tar, padded, pax_record, samples

from runtime.untrusted import tar, tar_archive
from runtime.untrusted.samples import Sample, ShardError


class Recording(io.RawIOBase):
    """A read(n)-only stream (no seek, like botocore's StreamingBody) that records its largest read.

    `parts` are bytes or an int (that many zero bytes, made as they are read), so a 50 MB member costs no 50 MB.
    """

    def __init__(self, parts, short: int | None = None):
        self.parts = [p for p in parts]
        self.largest = 0
        self.short = short

    def read(self, n=-1):
        assert n is not None and n >= 0, "the reader must never read to the end of the stream"
        self.largest = max(self.largest, n)
        if self.short:
            n = min(n, self.short)
        while self.parts:
            part = self.parts[0]
            if isinstance(part, int):
                take = min(n, part)
                self.parts[0] = part - take
                if self.parts[0] == 0:
                    self.parts.pop(0)
                if take:
                    return bytes(take)
                continue
            taken, self.parts[0] = part[:n], part[n:]
            if not self.parts[0]:
                self.parts.pop(0)
            if taken:
                return taken
        return b""

    def seekable(self):
        return False


def sample_members(count: int, prefix: str = "") -> list[tuple[str, bytes]]:
    members = []
    for i in range(count):
        members += [
            (f"{prefix}{i:06d}.jpg", b"JPEG%d" % i),
            (f"{prefix}{i:06d}.txt", b"caption %d" % i),
            (f"{prefix}{i:06d}.json", b'{"i": %d}' % i),
        ]
    return members


@pytest.mark.parametrize("fmt", FORMATS)
def test_three_members_per_sample_in_each_format(fmt):
    data = make_tar(sample_members(3, "shard/"), FORMATS[fmt])
    assert samples(data) == [Sample(f"shard/{i:06d}", i, b"JPEG%d" % i, None) for i in range(3)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_path_over_100_characters_in_each_format(fmt):
    folder = "d" * 60 + "/" + "e" * 60  # ustar splits it into prefix and name; gnu writes 'L', pax writes 'x'
    data = make_tar([(f"{folder}/000001.jpg", b"img"), (f"{folder}/000001.txt", b"t")], FORMATS[fmt])
    assert samples(data) == [Sample(f"{folder}/000001", 0, b"img", None)]


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_a_basename_over_100_characters(fmt):
    stem = "x" * 150
    data = make_tar([(f"{stem}.png", b"png"), ("next.webp", b"webp")], FORMATS[fmt])
    assert samples(data) == [Sample(stem, 0, b"png", None), Sample("next", 1, b"webp", None)]


def test_a_pax_path_that_is_not_ascii():
    data = make_tar([("ünï/çødé.JPG", b"img")], tarfile.PAX_FORMAT)
    assert samples(data) == [Sample("ünï/çødé", 0, b"img", None)]


def test_directories_are_skipped_and_a_symlinked_image_is_named_in_the_error_row():
    data = make_tar(
        [
            ("a/", "dir"),
            ("a/000001.jpg", b"one"),
            ("a/000002.jpg", "->000001.jpg"),
            ("a/000002.txt", b"t"),
            ("a/000003.jpg", b"three"),
        ]
    )
    assert samples(data) == [
        Sample("a/000001", 0, b"one", None),
        Sample("a/000002", 1, None, "no image in sample (members: .jpg (symlink), .txt)"),
        Sample("a/000003", 2, b"three", None),
    ]


def test_a_sample_without_an_image_is_an_error_row_naming_its_members():
    data = make_tar([("0.txt", b"t"), ("0.json", b"{}"), ("1.jpg", b"i")])
    assert samples(data) == [
        Sample("0", 0, None, "no image in sample (members: .txt, .json)"),
        Sample("1", 1, b"i", None),
    ]


def test_a_member_over_the_limit_is_an_error_row_and_reads_stay_bounded():
    big = 50 * MB
    info = tarfile.TarInfo("000001.jpg")
    info.size = big
    stream = Recording(
        [
            padded(header(b"000000.jpg", 4)),
            padded(b"zero"),
            info.tobuf(tarfile.USTAR_FORMAT),
            big,
            padded(header(b"000001.txt", 1)),
            padded(b"t"),
            make_tar([("000002.jpg", b"ok"), ("000002.txt", b"t")]),
        ]
    )
    result = samples(b"", max_member_bytes=MB, stream=stream)
    assert result == [
        Sample("000000", 0, b"zero", None),
        Sample("000001", 1, None, f"the .jpg member is {big:,} bytes, over the limit of {MB:,} (max_image_bytes)"),
        Sample("000002", 2, b"ok", None),
    ]
    assert stream.largest <= tar_archive.CHUNK


def test_a_large_sidecar_is_dropped_in_chunks_and_an_image_under_the_limit_is_read_in_chunks():
    image = os.urandom(3 * tar_archive.CHUNK + 5)
    sidecar = 20 * MB
    stream = Recording(
        [padded(header(b"k.jpg", len(image))), padded(image), padded(header(b"k.json", sidecar)), sidecar, END]
    )
    assert samples(b"", max_member_bytes=4 * MB, stream=stream) == [Sample("k", 0, image, None)]
    assert stream.largest <= tar_archive.CHUNK


def test_short_reads_give_the_same_samples():
    data = make_tar(sample_members(4), tarfile.GNU_FORMAT)
    assert samples(b"", stream=Recording([data], short=7)) == samples(data)


@pytest.mark.parametrize("cut", [100, 512 + 3, 1024, 1536 + 200])
def test_a_truncated_shard_fails_whole_naming_the_byte(cut):
    data = padded(header(b"0.jpg", 600)) + padded(os.urandom(600)) + padded(header(b"1.jpg", 10)) + padded(b"x")
    with pytest.raises(ShardError, match=f"^truncated at byte {cut}"):
        samples(data[:cut])


def test_a_shard_without_its_end_blocks_is_truncated():
    data = padded(header(b"0.jpg", 3)) + padded(b"abc")
    with pytest.raises(ShardError, match=f"^truncated at byte {len(data)}: .*end-of-archive"):
        samples(data)


def test_a_single_end_block_at_the_end_of_the_stream_is_accepted():
    data = padded(header(b"0.jpg", 3)) + padded(b"abc") + bytes(512)
    assert samples(data) == [Sample("0", 0, b"abc", None)]


def test_a_bad_checksum_fails_whole_naming_the_header():
    data = bytearray(make_tar(sample_members(2), tarfile.USTAR_FORMAT))
    data[1024 + 5] ^= 0x01  # the second header's name
    with pytest.raises(ShardError, match="^not a tar: bad header checksum at byte 1024$"):
        samples(bytes(data))


@pytest.mark.parametrize("junk", [os.urandom(4096), b"PAR1" + os.urandom(600), b"\x89PNG\r\n" + bytes(1000)])
def test_random_junk_is_not_a_tar(junk):
    with pytest.raises(ShardError, match="^not a tar"):
        samples(junk)


def test_a_zero_length_stream_is_not_a_tar():
    with pytest.raises(ShardError, match="^not a tar: the shard is empty$"):
        samples(b"")


def test_an_empty_archive_has_no_samples():
    assert samples(make_tar([])) == []


def test_a_lone_zero_block_followed_by_data_is_refused():
    data = padded(header(b"0.jpg", 1)) + padded(b"a") + bytes(512) + padded(header(b"1.jpg", 1)) + padded(b"b")
    with pytest.raises(ShardError, match="lone zero block at byte 1024"):
        samples(data + END)


def test_more_samples_than_the_limit_fails_the_shard_naming_the_setting():
    data = make_tar(sample_members(3))
    assert len(samples(data, max_samples=3)) == 3
    reader = tar.iter_samples(io.BytesIO(data), max_member_bytes=MB, max_samples=2)
    assert [next(reader).key, next(reader).key] == ["000000", "000001"]
    with pytest.raises(ShardError, match="more than 2 samples .*max_shard_samples"):
        next(reader)


@pytest.mark.parametrize(
    "names, expected",
    [
        (["k.seg.png", "k.jpg"], "k.jpg"),  # a plain image extension wins over a last suffix
        (["k.seg.png", "k.txt"], "k.seg.png"),  # the last suffix, where there is no plain image
        (["k.png", "k.jpg"], "k.png"),  # the first plain image
        (["k.JPEG", "k.txt"], "k.JPEG"),
        (["k.Webp"], "k.Webp"),
        (["k.jpg.txt", "k.txt"], None),
        (["k.gif"], "k.gif"),  # every accepted image type (runtime.images.formats), as in S3 events and the CLI
        (["k.svg", "k.eps"], None),
    ],
)
def test_which_member_is_the_image(names, expected):
    result = samples(make_tar([(n, n.encode()) for n in names]))
    assert len(result) == 1 and result[0].key == "k"
    assert result[0].data == (expected.encode() if expected else None)
    assert (result[0].error is None) == (expected is not None)


def test_keys_keep_their_folder_and_group_only_consecutive_members():
    data = make_tar(
        [
            ("./a/b/000123.jpg", b"1"),
            ("./a/b/000123.cls", b"3"),
            ("README", b"r"),
            (".hidden", b"h"),
            ("000124.jpg", b"2"),
            ("000123.jpg", b"again"),
        ]
    )
    assert samples(data) == [
        Sample("./a/b/000123", 0, b"1", None),
        Sample("000124", 1, b"2", None),
        Sample("000123", 2, b"again", None),
    ]


def test_a_key_that_is_not_utf8_is_an_error_row_with_its_repr():
    data = padded(header(b"\xff\xfe01.jpg", 1)) + padded(b"a") + padded(header(b"ok.jpg", 1)) + padded(b"b") + END
    assert samples(data) == [
        Sample("\\xff\\xfe01", 0, None, "key is not valid UTF-8: b'\\xff\\xfe01'"),
        Sample("ok", 1, b"b", None),
    ]


def test_a_key_over_1024_bytes_is_an_error_row():
    long = "k" * 2000
    result = samples(make_tar([(long + ".jpg", b"a")], tarfile.PAX_FORMAT))
    assert result == [Sample("k" * 1024, 0, None, "key of 2,000 bytes, over the limit of 1,024")]


def test_gnu_base256_size():
    field = b"\x80" + (5).to_bytes(11, "big")
    data = padded(header(b"0.jpg", size_field=field)) + padded(b"hello") + END
    assert samples(data) == [Sample("0", 0, b"hello", None)]


def test_a_negative_or_garbled_size_is_not_a_tar():
    for field in (b"\xff" * 12, b"12x45670000\x00"):
        with pytest.raises(ShardError, match="^not a tar: (negative|bad) size"):
            samples(padded(header(b"0.jpg", size_field=field)) + END)


def test_a_pax_size_frames_the_member():
    pax = pax_record(b"size", b"5") + pax_record(b"path", b"long/0.jpg") + pax_record(b"mtime", b"1.5")
    data = (
        padded(header(b"PaxHeader", len(pax), b"x"))
        + padded(pax)
        + padded(header(b"0.jpg", 0))
        + padded(b"hello")
        + END
    )
    assert samples(data) == [Sample("long/0", 0, b"hello", None)]


def test_a_pax_header_over_64_kib_is_refused_before_it_is_read():
    size = 65 * 1024
    stream = Recording([padded(header(b"PaxHeader", size, b"x")), size])
    with pytest.raises(ShardError, match="pax header at byte 0 is 66,560 bytes, over 65,536"):
        samples(b"", stream=stream)
    assert stream.largest <= 512


def test_a_malformed_pax_header_is_refused():
    for pax in (b"99 path=x\n", b"xx path=x\n", b"8 path=\n" + b"junk"):
        data = padded(header(b"PaxHeader", len(pax), b"x")) + padded(pax) + padded(header(b"0.jpg")) + END
        with pytest.raises(ShardError, match="bad pax header"):
            samples(data)


def test_a_gnu_long_name_over_4_kib_is_refused():
    data = padded(header(b"././@LongLink", 5000, b"L")) + padded(b"a" * 5000) + END
    with pytest.raises(ShardError, match="GNU long name at byte 0 is 5,000 bytes, over 4,096"):
        samples(data)


def test_a_global_pax_header_is_skipped_and_an_extended_header_needs_a_member():
    glob = pax_record(b"comment", b"x" * 100)
    data = padded(header(b"global", len(glob), b"g")) + padded(glob) + padded(header(b"0.jpg", 1)) + padded(b"a")
    assert samples(data + END) == [Sample("0", 0, b"a", None)]
    with pytest.raises(ShardError, match="extended header at byte 0 has no member"):
        samples(padded(header(b"././@LongLink", 6, b"L")) + padded(b"a.jpg\x00") + END)


def test_contiguous_files_are_members_and_other_types_are_skipped():
    data = (
        padded(header(b"0.jpg", 1, b"7"))
        + padded(b"a")
        + padded(header(b"fifo.jpg", 0, b"6"))
        + padded(header(b"dev.jpg", 0, b"3"))
        + padded(header(b"old/", 0, b"0"))
        + END
    )
    assert samples(data) == [Sample("0", 0, b"a", None)]


def test_a_shard_streams_straight_from_an_s3_body(aws):
    """botocore's StreamingBody, as the worker reads a shard: read(n) only, no download to disk."""
    import uuid

    from runtime import aws as runtime_aws

    s3, bucket = runtime_aws.client("s3"), f"shards-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    data = make_tar(sample_members(5, "s/") + [("s/000005.txt", b"no image")], tarfile.GNU_FORMAT)
    s3.put_object(Bucket=bucket, Key="000000.tar", Body=data)
    body = s3.get_object(Bucket=bucket, Key="000000.tar")["Body"]
    assert samples(b"", stream=body) == samples(data)
    assert samples(data)[-1] == Sample("s/000005", 5, None, "no image in sample (members: .txt)")


def test_a_sample_of_3000_long_named_members_keeps_memory_flat_and_is_an_error_row():
    import tracemalloc

    info = tarfile.TarInfo("000000." + "x" * 16_000 + ".txt")
    info.size = 1
    member = info.tobuf(tarfile.PAX_FORMAT) + padded(b"t")
    stream = Recording([member] * 3000 + [make_tar([("000001.jpg", b"ok")])])
    tracemalloc.start()
    try:
        result = samples(b"", stream=stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result == [
        Sample("000000", 0, None, f"the sample has more than {tar.MAX_SAMPLE_MEMBERS:,} members"),
        Sample("000001", 1, b"ok", None),
    ]
    assert peak < 1 * MB, f"{peak:,} bytes at the peak for 48 MB of member names"


def test_a_sample_without_an_image_names_its_first_members_shortened():
    long = "y" * 200
    data = make_tar([(f"0.{i}{long}", b"t") for i in range(12)] + [("1.jpg", b"i")])
    row = samples(data)[0].error
    assert (
        row.startswith(f"no image in sample (members: .0{long[:63]}..., .1{long[:63]}...")
        and row.endswith(" and 2 more)")
        and len(row) < 1000
    )

"""Which keys are shards, and the sample and shard-error types every reader returns."""

from __future__ import annotations

import dataclasses

import pytest

from runtime.errors import CaptionKitError
from runtime.untrusted.samples import SHARD_FORMATS, Sample, ShardError, shard_format


@pytest.mark.parametrize(
    "key, expected",
    [
        ("a/b/000001.tar", "tar"),
        ("x.TAR", "tar"),
        ("data/train-00000-of-00010.parquet", "parquet"),
        ("x.Parquet", "parquet"),
        ("x.tar.gz", None),
        ("x.tgz", None),
        ("x.jpg", None),
        ("tar", None),
        ("a/.tar", None),
        ("a.tar/b", None),
        ("", None),
    ],
)
def test_shard_format_by_extension(key, expected):
    assert shard_format(key) == expected


def test_shard_formats_are_the_contracts():
    assert SHARD_FORMATS == {".tar": "tar", ".parquet": "parquet"}


def test_sample_is_frozen_and_shard_error_is_a_captionkit_error():
    sample = Sample("k", 0, b"x", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.key = "other"
    assert Sample("k", 1, None, "why") == Sample(key="k", index=1, data=None, error="why")
    assert issubclass(ShardError, CaptionKitError)

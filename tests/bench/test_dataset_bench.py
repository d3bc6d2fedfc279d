"""bench.datasets' data and sums: the shards it builds are what the runtime reads, and the prices add up."""

from __future__ import annotations

import io

import pyarrow as pa

from bench.dataset_data import images, parquet_shard, request_cost, tar_shard
from runtime.untrusted import parquet, tar


def test_the_bench_shards_read_back_as_their_samples_with_the_bad_ones_marked():
    pictures = images(120, bad_every=100)
    samples = list(
        tar.iter_samples(
            io.BytesIO(tar_shard(pictures, no_image="x-noimage")), max_member_bytes=1 << 20, max_samples=1000
        )
    )
    assert [s.key for s in samples] == [key for key, _ in pictures] + ["x-noimage"]
    assert [s.data for s in samples[:-1]] == [data for _, data in pictures]
    assert samples[-1].error and samples[-1].data is None
    assert len(pictures[50][1]) < len(pictures[49][1]) / 2  # the 1% truncated
    rows = list(
        parquet.iter_samples(pa.BufferReader(parquet_shard(pictures)), max_member_bytes=1 << 20, max_samples=1000)
    )
    assert [(r.key, r.data) for r in rows] == pictures


def test_request_cost_prices_each_class_and_counts_per_image():
    cost = request_cost({"s3 PUT": 1000, "s3 GET": 1000, "s3 LIST": 1000, "sqs ReceiveMessage": 1_000_000}, 1000)
    assert cost["requests_per_image_total"] == 1003.0
    # per 1,000 images: PUT $0.005 + GET $0.0004 + LIST $0.005 + SQS $0.40, scaled to 10 million images
    assert cost["request_cost_per_10m_usd"] == round((0.005 + 0.0004 + 0.005 + 0.40) * 10_000, 2)

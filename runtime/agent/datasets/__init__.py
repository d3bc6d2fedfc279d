"""Dataset jobs: webdataset and Parquet shards, or a manifest of keys, captioned into one Parquet file per shard.

A job message (`captionkit.job` with `shards` or `manifest`) is expanded by an agent into one `captionkit.shard`
message per input shard (a MANIFEST job is first cut into parts of `manifest_chunk_size` URIs). A shard message
names only (job id, index, count, run): the shard itself comes from the job's manifest in the results bucket. The
worker streams the shard, captions its samples in device batches and writes `shards/<index>.parquet` whole, then the
shard's marker; the agent finishing a run's last shard writes `summary.json`. Folder layout: runtime.agent.layout.

Modules: samples (a sample, the shard formats), tar (a bounded streaming webdataset reader), parquet (ranged S3
reads of Parquet shards), parquet_bounded (row groups read once their allocations are bounded), parquet_pages (the
page headers those bounds come from), output (the output file's schema), manifests (key files: CSV, text, Parquet, S3
Inventory), plan (checks, expansion, resubmission and retry), ledger (markers, runs, summary), run (one shard on
the worker), feed (its samples, read and decoded a bounded window ahead of the device).
"""

"""Dataset jobs' output side: webdataset and Parquet shards, or a manifest of keys, captioned into one Parquet file
per shard.

A job message (`captionkit.job` with `shards` or `manifest`) is expanded by an agent into one `captionkit.shard`
message per input shard (a MANIFEST job is first cut into parts of `manifest_chunk_size` URIs). A shard message
names only (job id, index, count, run): the shard itself comes from the job's manifest in the results bucket. The
worker streams the shard, captions its samples in device batches and writes `shards/<index>.parquet` whole, then the
shard's marker; the agent finishing a run's last shard writes `summary.json`. Folder layout: runtime.agent.layout.

Modules: output (the output file's schema), run (one shard on the worker), feed (its samples, read and decoded a
bounded window ahead of the device). Planning and the books are every job's: runtime.agent.plan (checks, expansion,
resubmission and retry) and runtime.agent.ledger (markers, runs, summary). The readers of the untrusted bytes
themselves (tar, Parquet, manifests, images) are runtime.untrusted's: this package drives them and never parses a
shard itself.
"""

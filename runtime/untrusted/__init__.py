"""Readers of bytes anyone may write, apart from the job logic that drives them.

Modules: sandbox (the pool of decoding children and its limits), child (what runs in one), wire (their frames: JSON and
bytes, no pickle), images (image bytes to pixels, accepted formats only), parquet and parquet_child (Parquet shards, key
lists and outputs: the parent's side and the child's operations, which read the file through parquet_file and its
columns through parquet_columns; both sides read the file a window at a time, windowed), tar (a bounded streaming
webdataset reader, pure Python, in process, over tar_archive's bounded members), manifests (CSV, text, gzip, Parquet and
S3 Inventory key lists, bounded in bytes and lines), samples (a shard's sample and ShardError).
"""

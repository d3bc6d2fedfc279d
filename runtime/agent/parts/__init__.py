"""One part of any job on the worker, and the Parquet output side of dataset jobs.

Every job (a prefix or URI list, SHARDS, MANIFEST) is expanded by an agent into one `captionkit.shard` message per
part (runtime.agent.plan): a dataset shard, or a part file of image URIs. A part message names only (job id, index,
count, run): the part itself comes from the job's manifest in the results bucket. The worker streams the part,
captions its samples in device batches and writes its output as the job's kind says (a result JSON per image for a
prefix or URI-list job, `shards/<index>.parquet` whole for a dataset job), then the part's marker; the agent
finishing a run's last part writes `summary.json`. Folder layout: runtime.agent.layout.

Modules: run (one part on the worker), feed (its samples, read and decoded a bounded window ahead of the device),
report (its progress as log lines, counters and metrics), output (the Parquet output file's schema). Planning and
the books are every job's: runtime.agent.plan (expansion, resubmission and retry) and runtime.agent.ledger (markers,
runs, summary). The readers of the untrusted bytes themselves (tar, Parquet, manifests, images) are
runtime.untrusted's: this package drives them and never parses a shard itself.
"""

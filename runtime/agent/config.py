"""The agent's settings: one frozen dataclass read from a JSON file, each key overridable by env."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path
from typing import Mapping

from runtime.errors import ConfigError
from runtime.images import DEFAULT_MAX_PIXELS
from runtime.images.formats import IMAGE_SUFFIXES
from runtime.load_policy import BACKENDS, DEVICES, QUANTIZE_MODES, quantize_fits
from runtime.untrusted.manifests import MAX_LINES
from runtime.untrusted.sandbox import DEFAULT_CPU_S, DEFAULT_MEMORY_BYTES

ENV_PREFIX = "CAPTIONKIT_"


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Every agent setting; `CAPTIONKIT_<NAME>` in the environment overrides the file."""

    queue_url: str = ""
    region: str = ""
    artifacts_bucket: str = ""
    model_pointer: str = "models/current.json"
    results_bucket: str = ""  # empty: the images bucket
    results_prefix: str = "results/"
    images_bucket: str = ""
    images_prefix: str = "incoming/"
    image_suffixes: tuple[str, ...] = IMAGE_SUFFIXES  # filters job prefixes, not S3 events
    batch_size: int = 8
    batch_wait_s: float = 0.5  # after the first message, gather more for at most this long
    wait_time_s: int = 20  # SQS long poll
    visibility_timeout_s: int = 120
    retry_backoff_s: float = 5.0  # first delay before a transiently failed message is seen again
    device: str = "auto"  # auto | cpu | cuda
    backend: str = "exported"  # exported | aoti (AOTInductor, compiled once per device; see aoti_shared_cache)
    compiled_cache_prefix: str = "compiled/"
    aoti_shared_cache: bool = False  # on: every writer of compiled_cache_prefix runs native code on every worker
    quantize: str = ""  # "" | int8 | fp16: CPU only, linear layers on fbgemm kernels at load (runtime.passes.quantize)
    asg_name: str = ""
    lifecycle_hook_name: str = ""
    launch_hook_name: str = ""  # set with a warm pool: completed once the model is loaded (runtime/agent/lifecycle.py)
    metrics_namespace: str = "CaptionKit"
    log_group: str = ""  # where the instance's log shipper sends these JSON lines
    pointer_poll_s: float = 60.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_image_bytes: int = 64 * 1024 * 1024
    # the decoding children (runtime.untrusted.sandbox) that parse images, Parquet files and manifests: address space
    # of each (bytes) and CPU seconds per image, footer or row group
    decoder_memory_bytes: int = DEFAULT_MEMORY_BYTES
    decoder_cpu_s: float = DEFAULT_CPU_S
    prefetch_threads: int = 8
    drain_timeout_s: float = 90.0
    max_batch_s: float = 0.0  # the longest a batch may take; 0: drain_timeout_s - 30 (the stack sets that)
    crash_limit: int = 2  # an image alone on the device when the worker died this often ends as an error record
    imds_url: str = "http://169.254.169.254"  # empty: never ask instance metadata
    imds_poll_s: float = 5.0
    cache_dir: str = "~/.cache/captionkit"
    # one agent per GPU (stacks/boot/bootstrap.sh): agent 0 completes the instance's lifecycle hooks
    # (runtime/agent/siblings.py); `gpu` ("<instance id>/<index>") is the Gpu dimension of the batch metrics
    agent_index: int = 0
    agent_count: int = 1
    agents_dir: str = ""  # where the agents of one instance hold their life locks; needed with agent_count > 1
    gpu: str = ""
    # images per part of a prefix or URI-list job (one part message, one marker); 0: 8 x batch_size. A part is
    # captioned by one agent with its downloads running ahead of the device, so a smaller part spreads a small job
    # over more GPUs and a larger one spends fewer S3 requests (about 8) per image
    job_chunk_size: int = 0
    job_topic_arn: str = ""  # SNS topic told when a job's summary is first written; empty: none
    # dataset jobs (runtime/agent/parts): shards and manifests may also live under these s3://bucket/prefix/
    # (the stack grants the workers read there and nowhere else); their captions go to Parquet under the job
    dataset_sources: tuple[str, ...] = ()
    manifest_chunk_size: int = 1000  # keys of a MANIFEST job per shard message (one Parquet output each)
    max_shard_samples: int = 100_000  # samples of one shard; a larger shard fails whole, with this reason
    max_manifest_bytes: int = 4 * 1024**3  # a MANIFEST job's key file (CSV, text, Parquet, S3 Inventory)
    max_manifest_lines: int = MAX_LINES  # its lines (blank ones too) or rows, read or inflated
    captioner_loader: str = "runtime.captioner:load_captioner"

    @property
    def hold_limit_s(self) -> float:
        """How long a message may stay held (a prefetched batch, then its own): past it, visibility lapses."""
        return 2 * (self.max_batch_s or max(30.0, self.drain_timeout_s - 30))

    @property
    def agent_name(self) -> str:
        """What names this agent (a dataset shard's `started` marker says who holds it): `gpu`, else the host."""
        return self.gpu or socket.gethostname()

    @property
    def results_bucket_name(self) -> str:
        """The bucket results go to: `results_bucket`, else the images bucket."""
        return self.results_bucket or self.images_bucket

    def part_size(self, kind: str) -> int:
        """URIs per part file of a job of `kind` ("images": a prefix or URI list; "keys": a MANIFEST job)."""
        if kind == "images":
            return min(self.job_chunk_size or 8 * self.batch_size, self.max_shard_samples)
        return self.manifest_chunk_size

    def require(self, *names: str) -> None:
        """Raise `ConfigError` naming each of `names` that is empty."""
        for name in names:
            if not getattr(self, name):
                raise ConfigError(f"{name} is not set: put it in the config file or set {ENV_PREFIX}{name.upper()}")


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}


def _convert(field: dataclasses.Field, value, origin: str):
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(item.strip() for item in items if item.strip())
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).strip().lower() in _BOOLS:
                return _BOOLS[str(value).strip().lower()]
            raise ValueError("expected true or false")
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__}")
        return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {value!r} is not a valid {kind} for {field.name} ({exc})") from None


def load_config(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read `path` (optional) then apply `CAPTIONKIT_*` environment overrides."""
    environ = os.environ if environ is None else environ
    fields = {field.name: field for field in dataclasses.fields(AgentConfig)}
    values = {}
    if path:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the agent config {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a JSON object of settings")
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise ConfigError(f"{path}: unknown settings {unknown}; known: {sorted(fields)}")
        values = {name: _convert(fields[name], value, str(path)) for name, value in raw.items()}
    for name, field in fields.items():
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            values[name] = _convert(field, environ[env_name], env_name)
    config = AgentConfig(**values)
    if config.device not in DEVICES:
        raise ConfigError(f"device must be {_either(DEVICES)}, not {config.device!r}")
    if config.backend not in BACKENDS:
        raise ConfigError(f"backend must be {_either(BACKENDS)}, not {config.backend!r}")
    if config.quantize not in ("", *QUANTIZE_MODES):
        raise ConfigError(f"quantize must be {_either(('empty', *QUANTIZE_MODES))}, not {config.quantize!r}")
    if config.quantize and not quantize_fits(config.backend, config.device):
        raise ConfigError(
            f"quantize={config.quantize} is for the exported backend on CPU "
            f"(backend is {config.backend}, device {config.device}); clear one of them"
        )
    if not config.results_prefix.endswith("/") or config.results_prefix.startswith("/"):
        raise ConfigError(
            f"results_prefix must be a key prefix like 'results/' (not empty, no leading '/', a "
            f"trailing '/'), not {config.results_prefix!r}: results outside one would be captioned "
            f"as images"
        )
    if config.crash_limit < 1:
        raise ConfigError(f"crash_limit must be at least 1, not {config.crash_limit}")
    if not 0 <= config.agent_index < config.agent_count or (config.agent_count > 1 and not config.agents_dir):
        raise ConfigError(
            f"agent_index={config.agent_index}, agent_count={config.agent_count}: expected "
            "0 <= index < count, and agents_dir set when more than one agent shares the instance"
        )
    for source in config.dataset_sources:
        bucket, _, prefix = source.removeprefix("s3://").partition("/")
        if not source.startswith("s3://") or not bucket or (prefix and not prefix.endswith("/")):
            raise ConfigError(
                f"dataset_sources: {source!r} is not s3://bucket/ or s3://bucket/prefix/ (a "
                f"trailing '/': a prefix that is a folder, never part of a name)"
            )
    if (
        min(config.manifest_chunk_size, config.max_shard_samples, config.max_manifest_bytes, config.max_manifest_lines)
        < 1
    ):
        raise ConfigError(
            "manifest_chunk_size, max_shard_samples, max_manifest_bytes and max_manifest_lines must be at least 1"
        )
    if config.batch_size < 1 or config.job_chunk_size < 0 or config.prefetch_threads < 1:
        raise ConfigError("batch_size and prefetch_threads must be at least 1, job_chunk_size at least 0")
    return config


def _either(names: tuple[str, ...]) -> str:
    """('a', 'b', 'c') as 'a, b or c'."""
    return f"{', '.join(names[:-1])} or {names[-1]}"

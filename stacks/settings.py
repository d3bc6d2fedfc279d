"""The deploy settings: one frozen dataclass parsed once from cdk.json's context and `-c` overrides."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, get_type_hints

from runtime.errors import CaptionKitError
from runtime.images.formats import case_variants
from stacks.dataset_sources import form_problems as dataset_source_problems
from stacks.gpu_stack import AMI_SNAPSHOT_GB, GPU_FAMILIES, PYPI, index_problem, instance_problem
from stacks.instance_types import INSTANCE_GPUS, gpu_count
from stacks.prices import INSTANCE_PRICES

CONTEXT_KEY = "captionkit"
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"


HINT = f"(fix it in cdk.json '{CONTEXT_KEY}' or with cdk -c key=value)"


class SettingsError(CaptionKitError, ValueError):
    """A setting has a value the stacks cannot deploy; the message says which and what to use."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every knob of the deployment; defaults are the committed values in cdk.json."""

    stack_name: str = "CaptionKit"
    region: str = "us-east-1"
    instance_types: tuple[str, ...] = ("g5.xlarge",)
    spot: bool = False
    min_capacity: int = 0
    max_capacity: int = 2
    ami: str = DLAMI_PARAMETER
    root_volume_gb: int = 100
    # per agent, and one agent runs on each GPU; one value for every GPU type (none is claimed per type)
    batch_size: int = 8
    max_batch_s: int = 180
    visibility_timeout_s: int = 900
    max_receive_count: int = 5
    images_prefix: str = "incoming/"
    # S3 filters match case-sensitively: every accepted suffix in both cases (runtime/images/formats.py owns them)
    image_suffixes: tuple[str, ...] = case_variants()
    results_prefix: str = "results/"
    alarm_email: str | None = None
    log_retention_days: int = 30
    max_message_age_s: int = 3600
    idle_minutes_before_scale_in: int = 15
    model_version_retention_days: int = 30
    torch_index_url: str = PYPI
    stalled_minutes: int = 30
    job_email: str | None = None  # subscribed to the job-completion topic (stacks/notify.py)
    instance_prices: dict[str, float] = dataclasses.field(default_factory=lambda: dict(INSTANCE_PRICES))
    # scale from zero (README "Scaling"): the backlog target per instance is images/s x accepted latency (an
    # instance with N GPUs runs N agents: its rate is theirs together)
    wake_on_upload: bool = True
    images_per_s_per_instance: float = 10.0
    accepted_latency_s: int = 120
    warm_pool: bool = False
    warm_pool_size: int = 1
    # dataset jobs (README "Deploy"): s3://bucket/ or s3://bucket/prefix/ the workers may also read, nothing more
    dataset_sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise SettingsError(f"{'; '.join(problems)} {HINT}")

    @property
    def ami_is_parameter(self) -> bool:
        """True when `ami` names an SSM parameter resolved at deploy time, not a fixed AMI id."""
        return self.ami.startswith("/")

    @property
    def backlog_per_instance(self) -> float:
        """The target-tracking target: images waiting per running instance that one clears in the accepted latency."""
        return self.images_per_s_per_instance * self.accepted_latency_s

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> Settings:
        """Parse `get(CONTEXT_KEY)` (the cdk.json block), then any top-level `-c key=value` overrides."""
        block = get(CONTEXT_KEY) or {}
        unknown = sorted(set(block) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise SettingsError(f"unknown setting(s) {unknown} in cdk.json '{CONTEXT_KEY}'")
        merged = dict(block)
        for field in dataclasses.fields(cls):
            override = get(field.name)
            if override is not None:
                merged[field.name] = override
        return cls.from_mapping(merged)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Build settings from JSON values or `-c` strings ("a,b" lists, "true" booleans, "8" numbers)."""
        hints = get_type_hints(cls)
        return cls(**{name: _coerce(name, hints[name], value) for name, value in values.items()})


def _coerce(name: str, hint: Any, value: Any) -> Any:
    if hint == dict[str, float]:
        pairs = [p.split("=", 1) for p in value.split(",") if p.strip()] if isinstance(value, str) else value.items()
        try:
            return {**INSTANCE_PRICES, **{str(k).strip(): float(v) for k, v in pairs}}  # entries override the table
        except (TypeError, ValueError):
            raise SettingsError(f"{name}={value!r}: expected type=price pairs like g5.xlarge=1.006 {HINT}") from None
    if hint == tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(str(item).strip() for item in items if str(item).strip())
    if hint is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "yes", "1", "false", "no", "0"):
            return str(value).lower() in ("true", "yes", "1")
        raise SettingsError(f"{name}={value!r}: expected true or false {HINT}")
    if hint in (int, float):
        try:
            return hint(value)
        except (TypeError, ValueError):
            whole = "whole " if hint is int else ""
            raise SettingsError(f"{name}={value!r}: expected a {whole}number {HINT}") from None
    if hint == str | None:
        return str(value) if value not in (None, "") else None
    return str(value)


def _problems(s: Settings) -> Iterator[str]:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,100}", s.stack_name):
        yield f"stack_name={s.stack_name!r}: expected letters, digits and '-'"
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", s.region):
        yield f"region={s.region!r}: expected a region name like us-east-1"
    if not s.instance_types or not all(re.fullmatch(r"[a-z0-9-]+\.[a-z0-9]+", t) for t in s.instance_types):
        yield f"instance_types={s.instance_types!r}: expected one or more like g5.xlarge,g6.xlarge"
    if not 0 <= s.min_capacity <= s.max_capacity or s.max_capacity < 1:
        yield f"min_capacity={s.min_capacity}, max_capacity={s.max_capacity}: expected 0 <= min <= max, max >= 1"
    if not (re.fullmatch(r"ami-[0-9a-f]{8,17}", s.ami) or s.ami_is_parameter):
        yield f"ami={s.ami!r}: expected an AMI id (ami-0123abcd) or an SSM parameter name starting with '/'"
    if s.root_volume_gb < AMI_SNAPSHOT_GB:
        yield (
            f"root_volume_gb={s.root_volume_gb}: at least {AMI_SNAPSHOT_GB}, the DLAMI's root snapshot size "
            "(a smaller volume fails at launch); the CUDA torch wheels need about 10 more"
        )
    if not 1 <= s.batch_size <= 64:
        yield f"batch_size={s.batch_size}: expected 1..64 (the artifact's maximum batch)"
    if not 2 * s.max_batch_s <= s.visibility_timeout_s <= 43200:
        yield (
            f"visibility_timeout_s={s.visibility_timeout_s}: expected at least twice "
            f"max_batch_s={s.max_batch_s} (a redelivered batch must not overlap the first) and at most 43200"
        )
    if not 1 <= s.max_receive_count <= 1000:
        yield f"max_receive_count={s.max_receive_count}: expected 1..1000"
    for name in ("images_prefix", "results_prefix"):
        if not re.fullmatch(r"[A-Za-z0-9!_.*'()-][A-Za-z0-9!_.*'()/-]*/", getattr(s, name)):
            yield (
                f"{name}={getattr(s, name)!r}: expected a key prefix like 'incoming/' (no leading '/', a trailing '/')"
            )
    if s.results_prefix.startswith(s.images_prefix) or s.images_prefix.startswith(s.results_prefix):
        yield (
            f"results_prefix={s.results_prefix!r} overlaps images_prefix={s.images_prefix!r}: results would become jobs"
        )
    if not s.image_suffixes or not all(x.startswith(".") for x in s.image_suffixes):
        yield f"image_suffixes={s.image_suffixes!r}: expected one or more like .jpg,.png"
    if any(not (isinstance(p, (int, float)) and p > 0) for p in s.instance_prices.values()):
        yield f"instance_prices={s.instance_prices!r}: expected positive hourly prices in USD"
    if s.job_email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", s.job_email):
        yield f"job_email={s.job_email!r}: expected an e-mail address or nothing"
    if s.alarm_email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", s.alarm_email):
        yield f"alarm_email={s.alarm_email!r}: expected an e-mail address or nothing"
    if s.log_retention_days not in _RETENTION_DAYS:
        yield f"log_retention_days={s.log_retention_days}: CloudWatch accepts one of {sorted(_RETENTION_DAYS)}"
    if min(s.max_message_age_s, s.idle_minutes_before_scale_in, s.model_version_retention_days) < 1:
        yield "max_message_age_s, idle_minutes_before_scale_in and model_version_retention_days must be positive"
    index = index_problem(s.torch_index_url)
    if index:
        yield index
    else:
        yield from filter(None, (instance_problem(t, s.torch_index_url) for t in s.instance_types))
    yield from _gpu_count_problems(s.instance_types)
    if not 10 <= s.stalled_minutes <= 1440:
        yield f"stalled_minutes={s.stalled_minutes}: expected 10..1440 (longer than a worker's boot)"
    yield from _scaling_problems(s)
    yield from dataset_source_problems(s.dataset_sources)


def _gpu_count_problems(instance_types: tuple[str, ...]) -> Iterator[str]:
    unknown = [t for t in instance_types if t not in INSTANCE_GPUS and t.split(".", 1)[0] in GPU_FAMILIES]
    if unknown:
        yield (
            f"instance_types {','.join(unknown)}: not in stacks/instance_types.py's table; add each with its GPU "
            "and vCPU counts (from https://aws.amazon.com/ec2/instance-types/)"
        )
    counts = {t: gpu_count(t) for t in instance_types if t in INSTANCE_GPUS}
    if len(set(counts.values())) > 1:
        yield (
            f"instance_types mixes GPU counts ({', '.join(f'{t}: {n}' for t, n in counts.items())}): the backlog "
            "target is per instance, so every type must carry the same number of GPUs (one agent each)"
        )


# "This operation cannot be called on an Auto Scaling group that has a mixed instances policy or a launch
# template or launch configuration that requests Spot Instances." (PutWarmPool, EC2 Auto Scaling API Reference:
# https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_PutWarmPool.html; also the warm pools
# limitations, https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-warm-pools.html)
WARM_POOL_REFUSED = "AWS refuses a warm pool on a group with a mixed instances policy or Spot Instances (PutWarmPool)"


def _scaling_problems(s: Settings) -> Iterator[str]:
    if not (0 < s.images_per_s_per_instance <= 10_000 and 10 <= s.accepted_latency_s <= 86_400):
        yield (
            f"images_per_s_per_instance={s.images_per_s_per_instance}, accepted_latency_s={s.accepted_latency_s}: "
            "expected a measured rate above 0 (make bench: agent img/s) and a latency of 10..86400 s"
        )
    elif s.backlog_per_instance < 1:
        yield (
            f"images_per_s_per_instance x accepted_latency_s = {s.backlog_per_instance:g}: the backlog target "
            "per instance must be at least one image; accept a longer latency"
        )
    if s.warm_pool and s.spot:
        yield f"warm_pool=true with spot=true: {WARM_POOL_REFUSED}; set spot=false, or warm_pool=false"
    if s.warm_pool and len(s.instance_types) != 1:
        yield (
            f"warm_pool=true with instance_types={','.join(s.instance_types)}: {WARM_POOL_REFUSED}; "
            "a warm pool takes exactly one on-demand instance type"
        )
    if s.warm_pool and not 1 <= s.warm_pool_size <= s.max_capacity:
        yield f"warm_pool_size={s.warm_pool_size}: expected 1..max_capacity={s.max_capacity} stopped instances"


_RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}
)

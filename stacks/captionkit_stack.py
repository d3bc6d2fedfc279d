"""The one CaptionKit stack: it creates the constructs, wires their permissions, and names its outputs."""

from __future__ import annotations

import json

from aws_cdk import CfnOutput, Environment, Stack
from constructs import Construct

from runtime.registry import POINTER_KEY as MODEL_POINTER_KEY
from stacks.alarms import Alarms
from stacks.bundle import runtime_bundle
from stacks.dashboard import Dashboard
from stacks.dataset_sources import DatasetSource, own_bucket_problems, parse
from stacks.encryption import StackKey
from stacks.fleet import Fleet
from stacks.jobs import JobQueue
from stacks.network import Network
from stacks.notify import JobNotifications
from stacks.scaling import BacklogScaling
from stacks.settings import HINT, Settings, SettingsError
from stacks.storage import COMPILED_PREFIX, Storage
from stacks.wake_on_upload import WakeOnUpload
from stacks.worker_policy import METRICS_NAMESPACE, WorkerPolicy

# A drain finishes the batch in hand (at most max_batch_s) and then writes its results and deletes its messages.
DRAIN_MARGIN_S = 30


class CaptionKitStack(Stack):
    """Buckets, queue, GPU workers, scaling and alarms; one stack so one `cdk deploy` and one set of outputs."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings) -> None:
        super().__init__(
            scope,
            construct_id,
            stack_name=settings.stack_name,
            env=Environment(region=settings.region),
            description="CaptionKit: S3 images in, captions out, on a scale-to-zero GPU fleet",
        )
        self.settings = settings
        self.key = StackKey(self, "Encryption").key
        self.storage = Storage(self, "Storage", model_version_retention_days=settings.model_version_retention_days)
        self.dataset_sources = self._dataset_sources()
        self.jobs = JobQueue(
            self,
            "Jobs",
            visibility_timeout_s=settings.visibility_timeout_s,
            max_receive_count=settings.max_receive_count,
        )
        self.jobs.subscribe_to_uploads(
            self.storage.images, prefix=settings.images_prefix, suffixes=settings.image_suffixes
        )
        self.network = Network(self, "Network", flow_log_bucket=self.storage.access_logs)
        self.job_notifications = JobNotifications(self, "JobNotifications", email=settings.job_email, key=self.key)
        self.fleet = Fleet(
            self,
            "Fleet",
            settings=settings,
            network=self.network,
            bundle=runtime_bundle(self, "RuntimeBundle"),
            agent_config=self._agent_config(),
            log_key=self.key,
        )
        self.worker_policy = WorkerPolicy(
            self,
            "WorkerPolicy",
            role=self.fleet.role,
            artifacts=self.storage.artifacts,
            images=self.storage.images,
            images_prefix=settings.images_prefix,
            results_prefix=settings.results_prefix,
            queue=self.jobs.queue,
            dead_letters=self.jobs.dead_letters,
            log_group=self.fleet.log_group,
            group_name=self.fleet.group_name,
            dataset_sources=self.dataset_sources,
        )
        self.scaling = BacklogScaling(
            self,
            "Scaling",
            group=self.fleet.group,
            queue=self.jobs.queue,
            metrics_namespace=METRICS_NAMESPACE,
            target_per_instance=settings.backlog_per_instance,
            idle_minutes=settings.idle_minutes_before_scale_in,
            warm_pool=settings.warm_pool,
        )
        self.wake = (
            WakeOnUpload(
                self,
                "Wake",
                bucket=self.storage.images,
                prefix=settings.images_prefix,
                suffixes=settings.image_suffixes,
                group_name=self.fleet.group_name,
                log_retention_days=settings.log_retention_days,
                log_key=self.key,
            )
            if settings.wake_on_upload
            else None
        )
        self.alarms = Alarms(
            self,
            "Alarms",
            queue=self.jobs.queue,
            dead_letters=self.jobs.dead_letters,
            group_name=self.fleet.group_name,
            metrics_namespace=METRICS_NAMESPACE,
            max_message_age_s=settings.max_message_age_s,
            stalled_minutes=settings.stalled_minutes,
            alarm_email=settings.alarm_email,
            key=self.key,
        )
        self.job_notifications.allow_publish(self.fleet.role)
        self.dashboard = Dashboard(
            self,
            "Dashboard",
            name=f"{settings.stack_name}-fleet",
            queue=self.jobs.queue,
            dead_letters=self.jobs.dead_letters,
            group_name=self.fleet.group_name,
            metrics_namespace=METRICS_NAMESPACE,
        )
        self._outputs()

    def _dataset_sources(self) -> tuple[DatasetSource, ...]:
        """The settings' dataset sources, refused when one names this stack's own buckets (their names are only
        known here, by logical id)."""
        s, storage = self.settings, self.storage
        own = {
            self.get_logical_id(bucket.node.default_child): holds
            for bucket, holds in (
                (storage.artifacts, "artifacts"),
                (storage.images, "images"),
                (storage.access_logs, "access-log"),
            )
        }
        problems = list(
            own_bucket_problems(
                s.dataset_sources,
                own=own,
                results_prefix=s.results_prefix,
                images_logical_id=self.get_logical_id(storage.images.node.default_child),
            )
        )
        if problems:
            raise SettingsError(f"{'; '.join(problems)} {HINT}")
        return tuple(parse(uri) for uri in s.dataset_sources)

    def _agent_config(self) -> dict:
        s = self.settings
        return {
            "queue_url": self.jobs.queue.queue_url,
            "region": self.region,
            "artifacts_bucket": self.storage.artifacts.bucket_name,
            "model_pointer": MODEL_POINTER_KEY,
            "results_bucket": self.storage.images.bucket_name,
            "results_prefix": s.results_prefix,
            "images_bucket": self.storage.images.bucket_name,
            "images_prefix": s.images_prefix,
            "image_suffixes": list(s.image_suffixes),
            "batch_size": s.batch_size,
            "visibility_timeout_s": s.visibility_timeout_s,
            "drain_timeout_s": s.max_batch_s + DRAIN_MARGIN_S,
            "device": "cuda",
            "compiled_cache_prefix": COMPILED_PREFIX,
            "metrics_namespace": METRICS_NAMESPACE,
            "job_topic_arn": self.job_notifications.topic.topic_arn,
            "dataset_sources": list(s.dataset_sources),
        }

    def _outputs(self) -> None:
        s, fleet = self.settings, self.fleet
        outputs = {
            "ArtifactsBucket": (self.storage.artifacts.bucket_name, "models/<sha256>.pt2 and the pointer"),
            "ModelPointerKey": (MODEL_POINTER_KEY, "key of the current-model pointer in ArtifactsBucket"),
            "ImagesBucket": (self.storage.images.bucket_name, "drop images under ImagesPrefix"),
            "ImagesPrefix": (s.images_prefix, "objects created here become jobs"),
            "ImageSuffixes": (",".join(s.image_suffixes), "key endings that become jobs (case-sensitive)"),
            "ResultsBucket": (self.storage.images.bucket_name, "where result JSON lands"),
            "ResultsPrefix": (s.results_prefix, "result of <key> is <ResultsPrefix><key>.json"),
            "QueueUrl": (self.jobs.queue.queue_url, "the jobs queue (S3 events or batch submissions)"),
            "DeadLetterQueueUrl": (self.jobs.dead_letters.queue_url, "jobs that failed every retry"),
            "GroupName": (fleet.group.auto_scaling_group_name, "the workers' auto scaling group"),
            "LifecycleHookName": (fleet.lifecycle_hook_name, "the drain-before-termination hook"),
            "LogGroup": (fleet.log_group.log_group_name, "worker boot and agent logs"),
            "AgentConfig": (fleet.agent_config_json, "the workers' agent config (JSON)"),
            "AlarmTopicArn": (self.alarms.topic.topic_arn, "every alarm notifies here: subscribe to it (see README)"),
            "JobTopicArn": (self.job_notifications.topic.topic_arn, "a message per finished batch job (its summary)"),
            "DashboardUrl": (self.dashboard.url, "the fleet's CloudWatch dashboard"),
            "DatasetSources": (json.dumps(list(s.dataset_sources)), "where dataset jobs may also read (JSON list)"),
        }
        for name, (value, description) in outputs.items():
            CfnOutput(self, name, value=value, description=description)

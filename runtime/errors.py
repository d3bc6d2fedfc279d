"""Every error the runtime raises, on the project's one base, grouped by what the caller should do about it."""


class CaptionKitError(Exception):
    """Base class for errors a user can act on: the command-line tools catch it and print its one line."""


# ---- the artifact, its description and its pointer: refused, saying why (export or upload again) ------------


class ArtifactError(CaptionKitError):
    """The .pt2 artifact is unusable: truncated, tampered, wrong schema or torch version."""


class BadDescription(CaptionKitError, ValueError):
    """A program description this runtime will not build: the message names the program, the node and the check."""


class NotDescribable(CaptionKitError):
    """The program holds something the description format does not describe: the exporter refuses it, naming what."""


class NoModelYet(CaptionKitError):
    """No model pointer has been published: a deployed fleet before its first `make upload`."""


class RegistryError(CaptionKitError):
    """A registry command cannot do what was asked: nothing to roll back to, or an upload that did not land."""


class AotiUnavailable(CaptionKitError):
    """No compiled package could be found, compiled or loaded (the message says why): use the exported programs."""


class CaptureFailed(CaptionKitError):
    """A decode bucket's static buffers or CUDA graph could not be made (the message names the bucket and the cause),
    or a thread other than the serving one asked for a capture. The model decodes on the eager loop, and says so."""


# ---- one input: never retried --------------------------------------------------------------------------------


class BadImage(CaptionKitError):
    """A permanent input error: not an image, corrupt, empty or too large. Never retried."""


class PlanError(CaptionKitError):
    """A dataset job's input cannot be planned (no shards, a bad shard, a malformed or out-of-scope manifest).

    The message names the first problem; nothing of the job is queued."""


class SubmitRefused(CaptionKitError):
    """A job that `submit` will not queue (bad arguments or settings, images the workers may not read, a dataset that
    cannot be planned, a message too large): the message says why; nothing was queued."""


# ---- the agent ---------------------------------------------------------------------------------------------------


class ConfigError(CaptionKitError):
    """The agent's settings are missing, mistyped or unknown."""


class DeviceError(CaptionKitError):
    """The requested or present GPU cannot be used."""


class UnknownMessage(CaptionKitError, ValueError):
    """A body the agent cannot act on; it goes to the dead-letter queue, never crashes the agent."""


class RetryLater(CaptionKitError):
    """A transient failure (S3 or SQS errors, throttling, timeouts): the message goes back to the queue."""


class Replaced(CaptionKitError):
    """The object was overwritten after the event: this event is skipped, the newer upload's event captions it."""

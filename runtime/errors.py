"""Error types the runtime raises, split by what the caller should do about them."""


class CaptionKitError(Exception):
    """Base class for errors a user can act on."""


class ArtifactError(CaptionKitError):
    """The .pt2 artifact is unusable: truncated, tampered, wrong schema or torch version."""


class BadImage(CaptionKitError):
    """A permanent input error: not an image, corrupt, empty or too large. Never retried."""

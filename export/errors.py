"""Why an export stops: every error the exporter raises, on the project's one base (runtime.errors)."""

from runtime.errors import CaptionKitError


class UnsupportedModel(CaptionKitError, ValueError):
    """The checkpoint's architecture is not one the exporter can wrap."""


class UnsupportedGeneration(CaptionKitError, ValueError):
    """The generation config asks for something the runtime's decoding loop does not do."""


class UnsupportedProcessor(CaptionKitError, ValueError):
    """The image processor (or one of its settings) has no exact equivalent in `runtime.images.preprocess`."""


class ParityError(CaptionKitError, RuntimeError):
    """Exported programs and HF `generate` disagree beyond a near-tie; nothing is written."""


class ModelNotFound(CaptionKitError, ValueError):
    """`--model` names no local folder holding a checkpoint, or a hub id that cannot be reached or found cached."""

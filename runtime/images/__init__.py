"""Images in: open image bytes or files as HF's `load_image` does (load), then turn them into pixels (preprocess)."""

from runtime.images.load import DEFAULT_MAX_PIXELS, load_image

__all__ = ["DEFAULT_MAX_PIXELS", "load_image"]

"""CaptionKit exporter: HF checkpoint to one .pt2 artifact."""

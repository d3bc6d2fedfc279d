"""CaptionKit runtime: load a .pt2 captioning artifact and caption images with torch alone."""

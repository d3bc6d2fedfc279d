"""Readers of bytes anyone may write (images, tar and Parquet shards, manifests), and the child they parse in."""

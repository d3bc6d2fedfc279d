"""The model on this worker: the device it runs on, the pointer's .pt2 fetched and loaded, the hot swap."""

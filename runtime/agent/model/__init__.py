"""The model on this worker: the pointer's .pt2 fetched and loaded, its decode graphs captured, the hot swap."""

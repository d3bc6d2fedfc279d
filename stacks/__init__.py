"""CaptionKit's AWS infrastructure: settings, constructs, the stack, and the local (moto) deploy."""

"""What is done to loaded programs to make them faster on this machine; the artifact itself never changes.

linears (find constant linear layers), decode_layout (CPU: the decoder step's linears as weight @ x.T),
cache_in_place (CPU: the step writes its caches in place), quantize (CPU: fbgemm int8 / fp16 linears, int8 weights
kept in the cache), aoti (AOTInductor: compile, trust, cache).
"""

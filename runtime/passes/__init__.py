"""What is done to loaded programs to make them faster on this machine; the artifact itself never changes.

linears (find constant linear layers), decode_layout (CPU: the decoder step's linears as weight @ x.T),
cache_in_place (the step writes its caches in place), one_mask (one float attention mask per step), quantize (CPU:
fbgemm int8 / fp16 linears, int8 weights kept in the cache). Which ones a load applies: runtime.load_policy. The
backends that run the programs (exported, AOTInductor) are in runtime.backends.
"""

"""Decoding token ids from the exported programs: greedy (greedy.py), beam search (beam.py), the CUDA-graph decode on
fixed buckets (cuda_graphs.py, cuda_graphs_beam.py), what they share (state.py) and ids to text (text.py)."""

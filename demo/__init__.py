"""The demo captioner: procedural shapes images, training, and exact-match evaluation (laptop only)."""

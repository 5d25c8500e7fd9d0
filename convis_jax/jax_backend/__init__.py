"""JAX backend: the Flax CLIP, its checkpoint loader and the jitted sweeps."""

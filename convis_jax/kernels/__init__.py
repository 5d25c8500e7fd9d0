"""The method's jitted kernels: occlusion and gradient sweeps, stored windows, concept banks, sharding and memory sizes."""

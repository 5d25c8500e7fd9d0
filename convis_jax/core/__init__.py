"""Framework-agnostic core of convis_jax: NumPy (and nltk for WordNet) only.

Nothing under `convis_jax.core` imports jax, flax or torch; a test checks it.
"""

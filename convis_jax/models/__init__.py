"""The models: checkpoint families, configs, tokenizers, preprocessing, the Flax towers and the `Encoder` contract. Nothing here knows the method."""

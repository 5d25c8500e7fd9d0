"""The drawn concepts (`convis_jax.scenes.concepts`) are WordNet's, and none is a kind of another."""

from convis_jax import scenes
from convis_jax.core.wordnet import load_wordnet


def test_drawn_concepts_texts_are_wordnets():
    wordnet = load_wordnet()
    assert len(scenes.DRAWN_CONCEPTS) >= 8
    for name in scenes.DRAWN_CONCEPTS:
        synset = wordnet.synset(name)
        assert synset.pos() == "n"
        text = scenes.CONCEPT_TEXTS[name]
        assert text.definition == synset.definition()
        assert text.lemmas == tuple(lemma.replace("_", " ") for lemma in synset.lemma_names())


def test_drawn_concepts_are_not_ancestors_of_each_other():
    # One drawn shape must not be a kind of another, or a scene's label would
    # be ambiguous (a square is also a rectangle).
    wordnet = load_wordnet()
    for name in scenes.DRAWN_CONCEPTS:
        ancestors = {s.name() for path in wordnet.synset(name).hypernym_paths() for s in path[:-1]}
        assert not ancestors & set(scenes.DRAWN_CONCEPTS), name

"""ConceptVocabulary: the paper's numbers, the subtree index, lookups, texts, saving."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from convis_jax.core.vocabulary import ConceptVocabulary
from convis_jax.core.vocabulary_building import PHYSICAL_OBJECTS
from convis_jax.core.wordnet import load_wordnet
from convis_jax.errors import ConceptError, InputError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wn():
    return load_wordnet()


@pytest.fixture(scope="module")
def words():
    return [w for w in PHYSICAL_OBJECTS.read_text(encoding="utf-8").splitlines() if w.strip()]


@pytest.fixture(scope="module")
def physical():
    return ConceptVocabulary.physical_objects()


@pytest.fixture(scope="module")
def nouns():
    return ConceptVocabulary.all_nouns()


def _children_from_edges(edges):
    children = {}
    for parent, child in edges:
        children.setdefault(parent, []).append(child)
    return children


def _walk(name, children):
    """A plain walk down `edges`: the synset and every descendant."""
    found, stack = set(), [name]
    while stack:
        node = stack.pop()
        if node not in found:
            found.add(node)
            stack.extend(children.get(node, []))
    return found


# ---------------------------------------------------------------- the paper's numbers


def test_physical_objects_matches_the_paper(physical, words):
    assert len(words) == 1980
    assert len(physical) == 7080
    assert len(physical.edges) == 7314
    assert len(physical.subtree("bird.n.01")) == 91
    assert len(physical.subtree("entity.n.01")) == 7080


def test_physical_objects_equals_nltks_hypernym_paths(physical, wn, words):
    # Independent reference: nltk's own enumeration of hypernym paths, keeping
    # the paths made of ordinary hypernym links only.
    nodes, edges = set(), set()
    for word in words:
        for synset in wn.synsets(word, pos="n"):
            for path in synset.hypernym_paths():
                links = list(zip(path, path[1:]))
                if all(a in b.hypernyms() for a, b in links):
                    nodes.update(s.name() for s in path)
                    edges.update((a.name(), b.name()) for a, b in links)
    assert set(physical.names) == nodes
    assert set(physical.edges) == edges


def test_words_are_looked_up_as_written(physical, words):
    # "creme brulee" keeps its space and so finds no synset (the paper's list
    # drops it); with underscores it would add creme_brulee.n.01 and one more.
    assert "creme brulee" in words
    assert "creme_brulee.n.01" not in physical
    with pytest.raises(InputError, match="found none"):
        ConceptVocabulary.from_words(["creme brulee"])
    assert "creme_brulee.n.01" in ConceptVocabulary.from_words(["creme_brulee"])
    underscored = ConceptVocabulary.from_words([w.replace(" ", "_") for w in words])
    assert len(underscored) == 7082  # docs/method.md, section 1: the wrong variant


def test_instance_only_synsets_are_dropped(physical, wn):
    assert wn.synset("sun.n.01").hypernyms() == []
    assert "sun.n.01" not in physical
    assert "sun.n.03" in physical  # "sun" still brings its class senses


def test_all_nouns(nouns, wn):
    assert len(nouns) == 82115
    assert len(nouns.subtree("entity.n.01")) == 82115
    # Instances stay and hang below their classes.
    assert nouns.parents("sun.n.01") == ["star.n.01"]
    assert "sun.n.01" in nouns.subtree("star.n.01")
    assert len(nouns.edges) == sum(
        len(s.hypernyms()) + len(s.instance_hypernyms()) for s in wn.all_synsets("n")
    )


def test_order_is_sorted_and_deterministic(physical):
    assert list(physical.names) == sorted(physical.names)
    assert physical.edges == sorted(physical.edges)
    # (A fresh process rebuilding the same fingerprint is checked below.)


# ------------------------------------------------------------------ subtree index


def _check_csr(vocab, sample):
    k = len(vocab)
    offsets, members, segments = (
        vocab.subtree_offsets, vocab.subtree_members, vocab.subtree_segment_ids
    )
    assert offsets.dtype == members.dtype == segments.dtype == np.int32
    assert offsets.shape == (k + 1,) and offsets[0] == 0 and offsets[-1] == members.size
    np.testing.assert_array_equal(segments, np.repeat(np.arange(k), np.diff(offsets)))
    children = _children_from_edges(vocab.edges)
    for name in sample:
        i = vocab.index(name)
        expected = sorted(vocab.index(n) for n in _walk(name, children))
        np.testing.assert_array_equal(members[offsets[i] : offsets[i + 1]], expected)
        assert set(vocab.subtree(name)) == _walk(name, children)


def test_subtree_csr_equals_a_walk_over_edges(physical):
    rng = np.random.default_rng(0)
    sample = [physical.names[i] for i in rng.choice(len(physical), 300, replace=False)]
    _check_csr(physical, sample + ["entity.n.01", "bird.n.01", "dog.n.01"])
    # Every concept's subtree in one pass: the sizes agree with the walk too.
    children = _children_from_edges(physical.edges)
    sizes = np.diff(physical.subtree_offsets)
    assert all(sizes[i] == len(_walk(n, children)) for i, n in enumerate(physical.names))


def test_all_nouns_csr_is_compact_and_right(nouns):
    rng = np.random.default_rng(1)
    sample = [nouns.names[i] for i in rng.choice(len(nouns), 100, replace=False)]
    _check_csr(nouns, sample + ["entity.n.01", "animal.n.01"])
    # Each noun sits in the subtrees of its ancestors only: about WordNet's depth.
    assert nouns.subtree_members.size < 15 * len(nouns)


def test_csr_arrays_are_read_only(physical):
    with pytest.raises(ValueError):
        physical.subtree_members[0] = 1


def test_children_parents_leaves(physical):
    children = _children_from_edges(physical.edges)
    parents = {}
    for parent, child in physical.edges:
        parents.setdefault(child, []).append(parent)
    for name in ("dog.n.01", "bird.n.01", "entity.n.01", "pug.n.01"):
        assert physical.children(name) == sorted(children.get(name, []))
        assert physical.parents(name) == sorted(parents.get(name, []))
        expected_leaves = sorted(n for n in _walk(name, children) if n not in children)
        assert physical.leaves(name) == expected_leaves
    assert physical.parents("dog.n.01") == ["canine.n.02", "domestic_animal.n.01"]
    assert physical.leaves("pug.n.01") == ["pug.n.01"]
    assert physical.parents("entity.n.01") == []


# ----------------------------------------------------------------- texts and lookups


def test_texts(physical, wn):
    i = physical.index("dog.n.01")
    assert physical.texts()[i] == wn.synset("dog.n.01").definition()
    assert physical.definition("dog.n.01") == wn.synset("dog.n.01").definition()
    assert physical.texts("lemmas")[i] == "dog, domestic dog, Canis familiaris"
    assert physical.texts("a photo of a {}")[i] == "a photo of a dog"
    definitions = physical.texts("definition")
    templated = physical.texts("{}")
    for name in physical.names[::97]:
        synset = wn.synset(name)
        j = physical.index(name)
        assert definitions[j] == synset.definition()
        assert templated[j] == synset.lemma_names()[0].replace("_", " ")
    assert len(physical.texts("lemmas")) == len(physical)


@pytest.mark.parametrize("mode", ["gloss", "a photo of a {lemma}", ""])
def test_unknown_text_mode(physical, mode):
    with pytest.raises(InputError, match="text mode"):
        physical.texts(mode)


def test_lookups(physical):
    assert "dog.n.01" in physical and "sun.n.01" not in physical and 3 not in physical
    assert physical.names[physical.index("dog.n.01")] == "dog.n.01"
    with pytest.raises(ConceptError, match="did you mean"):
        physical.index("dgo.n.01")
    with pytest.raises(ConceptError):
        physical.subtree("sun.n.01")


def test_resolve_names_and_words(physical, wn):
    assert physical.resolve(["dog.n.01", "bird.n.01"]) == ["dog.n.01", "bird.n.01"]
    assert physical.resolve("bird.n.01") == ["bird.n.01"]
    dog_senses = [s.name() for s in wn.synsets("dog", pos="n") if s.name() in physical]
    assert physical.resolve(["dog"]) == dog_senses
    assert dog_senses[0] == "dog.n.01" and len(dog_senses) == 7
    hot_dog = [s.name() for s in wn.synsets("hot_dog", pos="n") if s.name() in physical]
    assert physical.resolve(["hot dog"]) == hot_dog == physical.resolve(["Hot_Dog"])
    # A lemma-based name nltk accepts means WordNet's own name for that synset.
    assert physical.resolve(["domestic_dog.n.01"]) == ["dog.n.01"]


@pytest.mark.parametrize(
    "request_, pattern",
    [
        ([], "empty"),
        (["dgo"], r"'dgo' is neither.*did you mean.*\bdog\b"),
        (["dog.n.99"], r"not a WordNet noun synset.*did you mean.*dog\.n\.01"),
        (["run.v.01"], r"verb synset.*did you mean.*run\.n\."),
        (["sun.n.01"], r"WordNet noun synset outside this vocabulary of 7,080"),
        (["dog.n.01", "dog.n.01"], r"dog\.n\.01 is requested 2 times \(by 'dog\.n\.01', 'dog\.n\.01'\)$"),
        (["dog", "dog.n.01"], r"dog\.n\.01 is requested 2 times \(by 'dog', 'dog\.n\.01'\)"),
        (["catt", "bird.n.01", "dog.v.01"], r"(?s)2 problems.*'catt'.*did you mean.*cat.*'dog\.v\.01' is a verb"),
        ([3], "found int"),
    ],
)
def test_resolve_errors(physical, request_, pattern):
    with pytest.raises(ConceptError, match=pattern) as caught:
        physical.resolve(request_)
    assert isinstance(caught.value, KeyError)  # ConceptError is a KeyError too


# ------------------------------------------------------------------ other builders


def test_from_synsets_closes_upwards(wn, physical):
    vocab = ConceptVocabulary.from_synsets(["dog.n.01", "bird.n.01"])
    expected_nodes, expected_edges = set(), set()
    for name in ("dog.n.01", "bird.n.01"):
        for path in wn.synset(name).hypernym_paths():
            expected_nodes.update(s.name() for s in path)
            expected_edges.update((a.name(), b.name()) for a, b in zip(path, path[1:]))
    assert set(vocab.names) == expected_nodes
    assert set(vocab.edges) == expected_edges
    assert vocab.subtree("bird.n.01") == ["bird.n.01"]  # nothing below it was asked for
    assert set(ConceptVocabulary.from_synsets(physical.names).names) == set(physical.names)


@pytest.mark.parametrize(
    "names, error, pattern",
    [
        (["sun.n.01"], ConceptError, r"instance of star\.n\.01"),
        (["run.v.01"], ConceptError, r"verb synset.*run\.n\.01"),
        (["dgo.n.01"], ConceptError, "not a WordNet noun synset"),
        (["dog"], ConceptError, "not a synset name"),
        ("dog.n.01", InputError, "found the string"),
        ([], InputError, "empty"),
    ],
)
def test_from_synsets_errors(names, error, pattern):
    with pytest.raises(error, match=pattern):
        ConceptVocabulary.from_synsets(names)


def test_from_file_mixes_words_and_synsets(tmp_path):
    path = tmp_path / "concepts.txt"
    path.write_text("# my concepts\ndog\n\ncat.n.01\ncreme brulee\n  dune buggy  \n", encoding="utf-8")
    vocab = ConceptVocabulary.from_file(path)
    words = ConceptVocabulary.from_words(["dog", "creme brulee", "dune buggy"])
    cat = ConceptVocabulary.from_synsets(["cat.n.01"])
    assert set(vocab.names) == set(words.names) | set(cat.names)
    assert set(vocab.edges) == set(words.edges) | set(cat.edges)
    assert "cat.n.03" not in vocab  # only the named sense of "cat"
    with pytest.raises(InputError, match="readable"):
        ConceptVocabulary.from_file(tmp_path / "absent.txt")


def test_from_words_rejects_a_single_string():
    with pytest.raises(InputError, match="found the string"):
        ConceptVocabulary.from_words("dog")


# ---------------------------------------------------------------------- saving


def test_to_dict_round_trip_without_wordnet(physical):
    data = json.loads(json.dumps(physical.to_dict()))
    restored = ConceptVocabulary.from_dict(data)
    assert restored.names == physical.names
    assert restored.edges == physical.edges
    assert restored.fingerprint() == physical.fingerprint()
    for mode in ("definition", "lemmas", "a photo of a {}"):
        assert restored.texts(mode) == physical.texts(mode)
    for attribute in ("subtree_offsets", "subtree_members", "subtree_segment_ids"):
        np.testing.assert_array_equal(getattr(restored, attribute), getattr(physical, attribute))
    assert restored.resolve(["dog", "hot dog"][:1]) == physical.resolve(["dog"])
    # Without WordNet the error cannot tell unknown from outside, but still helps.
    with pytest.raises(ConceptError, match=r"not in this vocabulary.*dog\.n\.01"):
        restored.resolve(["dog.n.99"])
    # Without the sense order, a word lists its synsets by name.
    del data["senses"]
    by_name = ConceptVocabulary.from_dict(data)
    assert by_name.resolve(["dog"]) == sorted(physical.resolve(["dog"]))


def test_fingerprint_follows_names_and_edges(physical):
    data = physical.to_dict()
    data["edges"] = data["edges"][1:]
    assert ConceptVocabulary.from_dict(data).fingerprint() != physical.fingerprint()
    data = physical.to_dict()
    data["definitions"] = ["x"] * len(physical)
    assert ConceptVocabulary.from_dict(data).fingerprint() == physical.fingerprint()


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda d: d.pop("lemmas"), "found no"),
        (lambda d: d["edges"].append(["dog.n.01", "entity.n.01"]), "acyclic"),
        (lambda d: d["edges"].append(["dog.n.01", "unicorn.n.01"]), "unknown"),
        (lambda d: d["definitions"].pop(), "as many"),
    ],
)
def test_from_dict_rejects_inconsistent_parts(physical, change, pattern):
    data = physical.to_dict()
    change(data)
    with pytest.raises(InputError, match=pattern):
        ConceptVocabulary.from_dict(data)


# ------------------------------------------------------------- fresh processes


def _run_python(code, env):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env, capture_output=True, text=True, timeout=300, cwd=env.get("HOME"),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_fresh_process_builds_from_the_bundled_zip(tmp_path, physical):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NLTK_DATA"}
    env.update(HOME=str(home), PYTHONPATH=str(REPO))
    out = _run_python(
        """
        import sys
        from convis_jax.core.vocabulary import ConceptVocabulary
        vocab = ConceptVocabulary.physical_objects()
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "flax", "torch"))
        print(len(vocab), len(vocab.edges), vocab.fingerprint(), heavy)
        """,
        env,
    )
    assert out == f"7080 7314 {physical.fingerprint()} []"
    assert list(home.iterdir()) == []  # nothing downloaded or written to HOME


def test_import_loads_no_framework():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = _run_python(
        """
        import sys
        import convis_jax.core.vocabulary, convis_jax.core.wordnet
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "flax", "torch")))
        """,
        env,
    )
    assert out == "[]"

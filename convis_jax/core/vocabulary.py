"""WordNet concept vocabularies: the synsets ConVis explains and their hierarchy.

A `ConceptVocabulary` is a set T of WordNet noun synsets closed upwards under
hypernyms, with the hypernym -> hyponym edges between them (a DAG rooted at
`entity.n.01`) and, for every concept, its subtree (itself and all its
descendants inside T) as compact index arrays that the sweeps use to reduce
over every subtree at once (METHOD.md section 1).

Everything here is NumPy and plain Python; WordNet (through nltk) is needed
only to build a vocabulary, not to use one: `to_dict()` / `from_dict()` carry
everything the methods need.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convis_jax.core.cache import cache_root, load_arrays, save_arrays
from convis_jax.core.wordnet import BUNDLED_WORDNET, load_wordnet
from convis_jax.errors import ConceptError, InputError, warn

if TYPE_CHECKING:
    from nltk.corpus.reader.wordnet import Synset, WordNetCorpusReader

    WordNetArg = WordNetCorpusReader | str | Path | None

ROOT = "entity.n.01"
PHYSICAL_OBJECTS = Path(__file__).resolve().parents[1] / "data" / "physical_objects.txt"

#: Text modes accepted by `ConceptVocabulary.texts` besides templates with "{}".
TEXT_MODES = ("definition", "lemmas")

_SYNSET_NAME = re.compile(r"^(?P<head>\S+)\.(?P<pos>[nvasr])\.(?P<sense>\d+)$")
_POS_NAMES = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective satellite", "r": "adverb"}
_SUGGESTIONS = 5
#: Bumped whenever building a preset, or its cached form, changes: older entries are ignored.
VOCABULARY_FORMAT = 2


class ConceptVocabulary:
    """A closed-upwards set of WordNet noun synsets with its hypernym hierarchy.

    Concepts are kept in one deterministic order, sorted by synset name
    (Python string order); a concept's *index* is its position in `names`,
    and every array below is indexed that way.

    Attributes:
        names: the synset names, sorted (e.g. `"dog.n.01"`).
        edges: the (hypernym, hyponym) name pairs, sorted.
        subtree_offsets: int32 [K+1], CSR offsets; concept i's subtree is
            `subtree_members[subtree_offsets[i]:subtree_offsets[i + 1]]`.
        subtree_members: int32 [M], concept indices in [0, K); each subtree
            holds its own concept and its descendants, in ascending index order.
        subtree_segment_ids: int32 [M], the concept whose subtree each entry of
            `subtree_members` belongs to (non-decreasing), for segment reductions.

    The arrays are read-only: vocabularies are shared between sweeps.
    """

    def __init__(
        self,
        names: Sequence[str],
        edges: Iterable[tuple[str, str]],
        definitions: Sequence[str],
        lemmas: Sequence[Sequence[str]],
        senses: Mapping[str, Sequence[str]] | None = None,
        *,
        wordnet: WordNetCorpusReader | None = None,
    ):
        """Builds a vocabulary from its parts; the `from_*` constructors are the usual way.

        Args:
            names: K distinct synset names, in any order (they are sorted).
            edges: (hypernym, hyponym) name pairs between `names`, acyclic.
            definitions: K WordNet glosses, aligned with `names`.
            lemmas: K non-empty lists of lemma names (underscores, WordNet
                order), aligned with `names`.
            senses: lower-case word (spaces, not underscores) -> the synset
                names inside the vocabulary that it names, in WordNet's sense
                order; `resolve` looks words up here. None derives it from
                `lemmas`, ordering each word's synsets by name.
            wordnet: the reader the vocabulary came from, if any; used only to
                make error messages more precise.

        Raises:
            InputError: the parts disagree in length, repeat a name, or the
                edges name unknown synsets or form a cycle.
        """
        if not (len(names) == len(definitions) == len(lemmas)):
            raise InputError(
                f"expected as many definitions and lemma lists as names ({len(names)}), "
                f"found {len(definitions)} definitions and {len(lemmas)} lemma lists"
            )
        if len(set(names)) != len(names):
            repeated = sorted(n for n, count in Counter(names).items() if count > 1)
            raise InputError(f"expected distinct synset names, found repeats: {repeated[:5]}")
        if any(not entry for entry in lemmas):
            raise InputError("expected at least one lemma name per synset, found an empty list")
        order = sorted(range(len(names)), key=lambda i: names[i])
        self.names: tuple[str, ...] = tuple(names[i] for i in order)
        self._definitions = tuple(str(definitions[i]) for i in order)
        self._lemmas = tuple(tuple(lemmas[i]) for i in order)
        self._index = {name: i for i, name in enumerate(self.names)}
        self._wordnet = wordnet

        pairs = set()
        for pair in edges:
            parent, child = pair
            unknown = [n for n in (parent, child) if n not in self._index]
            if unknown:
                raise InputError(
                    f"expected edges between the vocabulary's synsets, found "
                    f"({parent!r}, {child!r}) with unknown {unknown}"
                )
            if parent == child:
                raise InputError(
                    f"expected a hierarchy without loops, found ({parent!r}, {child!r})"
                )
            pairs.add((self._index[parent], self._index[child]))
        edge_index = np.array(sorted(pairs), dtype=np.int32).reshape(-1, 2)
        self.edges: list[tuple[str, str]] = [
            (self.names[p], self.names[c]) for p, c in edge_index.tolist()
        ]
        k = len(self.names)
        # Children and parents as CSR: rows sorted by (parent, child), resp. (child, parent).
        self._child_offsets, self._child_members = _csr(edge_index[:, 0], edge_index[:, 1], k)
        by_child = edge_index[np.lexsort((edge_index[:, 0], edge_index[:, 1]))]
        self._parent_offsets, self._parent_members = _csr(by_child[:, 1], by_child[:, 0], k)
        self.subtree_offsets, self.subtree_members, self.subtree_segment_ids = _subtree_csr(
            self._child_offsets, self._child_members, self._parent_offsets, self._parent_members,
            self.names,
        )
        for array in (self.subtree_offsets, self.subtree_members, self.subtree_segment_ids):
            array.flags.writeable = False

        if senses is None:
            by_word: dict[str, list[str]] = {}
            for name, words in zip(self.names, self._lemmas):
                for word in dict.fromkeys(_normalise_word(w) for w in words):
                    by_word.setdefault(word, []).append(name)
            senses = by_word
        self._senses = {
            _normalise_word(word): tuple(n for n in synsets if n in self._index)
            for word, synsets in senses.items()
        }
        self._senses = {word: synsets for word, synsets in self._senses.items() if synsets}

    # ------------------------------------------------------------------ builders

    @classmethod
    def from_words(cls, words: Iterable[str], *, wordnet: WordNetArg = None) -> ConceptVocabulary:
        """The paper's construction: every noun synset of every word, closed upwards.

        Each word is looked up as written (nltk's `synsets(word, pos="n")`,
        which lower-cases it and applies WordNet's morphology), so "creme
        brulee" with its space finds nothing and is dropped, as in the paper.
        Every chain of ordinary hypernyms from each synset up to `entity.n.01`
        is kept; words without noun synsets are dropped, and so are synsets
        that have only instance hypernyms (e.g. `sun.n.01`), since no chain of
        ordinary hypernyms reaches the root from them.

        Args:
            words: the words, e.g. the lines of `physical_objects.txt`.
            wordnet: a WordNet reader, an NLTK data folder, or None for the
                bundled WordNet 3.0 (see `load_wordnet`).

        Returns:
            The vocabulary.

        Raises:
            InputError: `words` is a single string, or no word has a noun
                synset that reaches the root.
        """
        if isinstance(words, str):
            raise InputError(f"expected a list of words, found the string {words!r}")
        wn = _reader(wordnet)
        seeds = [s for word in words for s in wn.synsets(word, pos="n")]
        return cls._closure(wn, seeds)

    @classmethod
    def from_synsets(cls, names: Iterable[str], *, wordnet: WordNetArg = None) -> ConceptVocabulary:
        """The given noun synsets and every ordinary hypernym chain above them.

        Names follow nltk (`dog.n.01`); a lemma-based name nltk accepts (such
        as `domestic_dog.n.01`) is replaced by the synset's own name.

        Args:
            names: noun synset names.
            wordnet: a WordNet reader, an NLTK data folder, or None for the
                bundled WordNet 3.0.

        Returns:
            The vocabulary.

        Raises:
            InputError: `names` is a single string or empty.
            ConceptError: a name is not a WordNet noun synset, or the synset has
                only instance hypernyms (an instance such as `sun.n.01` has no
                ordinary hypernym chain to the root; `all_nouns()` keeps them).
        """
        if isinstance(names, str):
            raise InputError(f"expected a list of synset names, found the string {names!r}")
        wn = _reader(wordnet)
        seeds = _lookup_synsets(wn, list(names))
        return cls._closure(wn, seeds, strict=True)

    @classmethod
    def from_file(cls, path: str | Path, *, wordnet: WordNetArg = None) -> ConceptVocabulary:
        """A vocabulary from a text file of words and synset names, one per line.

        Lines shaped like a noun synset name (`dog.n.01`: no spaces, `.n.` and
        a sense number) are synset names, treated as by `from_synsets`; other
        lines are words, treated as by `from_words`. Blank lines and lines
        starting with `#` are skipped.

        Args:
            path: the UTF-8 text file.
            wordnet: a WordNet reader, an NLTK data folder, or None for the
                bundled WordNet 3.0.

        Returns:
            The vocabulary.

        Raises:
            InputError: the file cannot be read or yields no synset.
            ConceptError: a synset-name line is not a WordNet noun synset with
                an ordinary hypernym chain to the root.
        """
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(
                f"expected a readable UTF-8 text file at {str(path)!r}: {error}"
            ) from None
        entries = [line.strip() for line in lines]
        entries = [e for e in entries if e and not e.startswith("#")]
        synset_names = [e for e in entries if _looks_like_noun_synset(e)]
        words = [e for e in entries if not _looks_like_noun_synset(e)]
        wn = _reader(wordnet)
        named = _lookup_synsets(wn, synset_names) if synset_names else []
        _check_reach_root(named)
        seeds = named + [s for word in words for s in wn.synsets(word, pos="n")]
        return cls._closure(wn, seeds)

    @classmethod
    def physical_objects(cls, *, wordnet: WordNetArg = None) -> ConceptVocabulary:
        """The paper's vocabulary: `from_words` over its 1,980 physical-object words.

        With WordNet 3.0 this gives 7,080 synsets and 7,314 edges. The word
        list ships as `convis_jax/data/physical_objects.txt` (MIT licence,
        from the ConVis authors' repository).

        Args:
            wordnet: a WordNet reader, an NLTK data folder, or None for the
                bundled WordNet 3.0.

        Returns:
            The vocabulary.
        """
        words = PHYSICAL_OBJECTS.read_text(encoding="utf-8").splitlines()
        return cls.from_words([w for w in words if w.strip()], wordnet=wordnet)

    @classmethod
    def all_nouns(cls, *, wordnet: WordNetArg = None) -> ConceptVocabulary:
        """Every noun synset of WordNet (82,115 in WordNet 3.0).

        Unlike `from_words`, instance synsets (e.g. `sun.n.01`) are kept; they
        hang below their classes by instance-hypernym edges, so that the
        subtree of `entity.n.01` is the whole vocabulary.

        Args:
            wordnet: a WordNet reader, an NLTK data folder, or None for the
                bundled WordNet 3.0.

        Returns:
            The vocabulary.
        """
        wn = _reader(wordnet)
        synsets = list(wn.all_synsets("n"))
        edges = [
            (h.name(), s.name())
            for s in synsets
            for h in s.hypernyms() + s.instance_hypernyms()
        ]
        return cls._from_synsets_and_edges(wn, synsets, edges)

    @classmethod
    def preset(cls, name: str, *, cache: bool = True) -> ConceptVocabulary:
        """"physical_objects" or "all_nouns" over the bundled WordNet, cached once built.

        Building all_nouns from WordNet takes about 30 s; the built vocabulary is
        kept under `cache_root()/vocabularies/`, keyed by the preset, the bundled
        WordNet's and word list's content and `VOCABULARY_FORMAT`, and read back in
        well under a second. A damaged or inconsistent entry is rebuilt with a
        warning; one that cannot be written only warns.

        Args:
            name: "physical_objects" or "all_nouns".
            cache: read and write the cache.

        Raises:
            InputError: an unknown preset name.
        """
        builders = {"physical_objects": cls.physical_objects, "all_nouns": cls.all_nouns}
        if name not in builders:
            raise InputError(f"expected a vocabulary preset in {sorted(builders)}, found {name!r}")
        path = _preset_cache_path(name) if cache else None
        if path is not None:
            arrays = load_arrays(path)
            if arrays is not None:
                try:
                    return cls._from_arrays(arrays)
                except (InputError, KeyError, ValueError, IndexError, TypeError) as err:
                    warn(f"vocabulary cache {path} is inconsistent ({err}); "
                         f"rebuilding it")
        vocabulary = builders[name]()
        if path is not None:
            try:
                save_arrays(path, vocabulary._to_arrays())
            except OSError as err:
                warn(f"cannot write the vocabulary cache {path} ({err}); continuing "
                     f"without it")
        return vocabulary

    def _to_arrays(self) -> dict[str, np.ndarray]:
        """Everything `__init__` computes, as arrays (strings as NUL-separated UTF-8 bytes)."""
        def text(strings) -> np.ndarray:
            strings = list(strings)
            if any("\0" in item for item in strings):
                raise ValueError("a string holds U+0000")
            return np.frombuffer("\0".join(strings).encode(), np.uint8)

        edges = np.array([[self._index[p], self._index[c]] for p, c in self.edges],
                         np.int32).reshape(-1, 2)
        words = sorted(self._senses)
        return {"names": text(self.names), "definitions": text(self._definitions),
                "lemmas": text("\1".join(entry) for entry in self._lemmas),
                "sense_words": text(words),
                "sense_names": text(" ".join(self._senses[w]) for w in words),
                "edges": edges,
                "child_offsets": self._child_offsets, "child_members": self._child_members,
                "parent_offsets": self._parent_offsets, "parent_members": self._parent_members,
                "subtree_offsets": self.subtree_offsets, "subtree_members": self.subtree_members,
                "subtree_segment_ids": self.subtree_segment_ids,
                "fingerprint": text([self.fingerprint()])}

    @classmethod
    def _from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ConceptVocabulary:
        """Rebuilds a vocabulary from `_to_arrays`, checking that the parts fit together.

        Raises:
            InputError (or KeyError, ValueError): missing or inconsistent parts.
        """
        def text(key: str) -> list[str]:
            return np.asarray(arrays[key], np.uint8).tobytes().decode().split("\0")

        self = cls.__new__(cls)
        self.names = tuple(text("names"))
        k = len(self.names)
        self._definitions = tuple(text("definitions"))
        self._lemmas = tuple(tuple(entry.split("\1")) for entry in text("lemmas"))
        if len(self._definitions) != k or len(self._lemmas) != k or list(self.names) != sorted(
                set(self.names)):
            raise InputError("names, definitions and lemmas disagree")
        self._index = {name: i for i, name in enumerate(self.names)}
        self._wordnet = None
        edges = np.asarray(arrays["edges"], np.int32).reshape(-1, 2)
        if len(edges) and (edges.min() < 0 or edges.max() >= k):
            raise InputError("edge indices out of range")
        self._edge_index = edges  # `edges` and `_senses` are built on first use
        for key in ("child", "parent"):
            offsets, members = arrays[f"{key}_offsets"], arrays[f"{key}_members"]
            if offsets.shape != (k + 1,) or members.shape != (len(edges),):
                raise InputError(f"{key} arrays have the wrong shapes")
            setattr(self, f"_{key}_offsets", offsets)
            setattr(self, f"_{key}_members", members)
        self.subtree_offsets = arrays["subtree_offsets"]
        self.subtree_members = arrays["subtree_members"]
        self.subtree_segment_ids = arrays["subtree_segment_ids"]
        m = len(self.subtree_members)
        if (self.subtree_offsets.shape != (k + 1,) or self.subtree_offsets[-1] != m
                or self.subtree_segment_ids.shape != (m,)
                or (m and (self.subtree_members.min() < 0 or self.subtree_members.max() >= k))):
            raise InputError("subtree arrays do not fit the names")
        for array in (self.subtree_offsets, self.subtree_members, self.subtree_segment_ids):
            array.flags.writeable = False
        (self._fingerprint,) = text("fingerprint")
        if len(self._fingerprint) != 64:
            raise InputError("the stored fingerprint is not a SHA-256")
        self._sense_parts = (text("sense_words"), text("sense_names"))
        if len(self._sense_parts[0]) != len(self._sense_parts[1]):
            raise InputError("sense words and names disagree")
        return self

    # Set by __init__; computed here only for a vocabulary read back by `_from_arrays`.
    @functools.cached_property
    def edges(self) -> list[tuple[str, str]]:
        return [(self.names[p], self.names[c]) for p, c in self._edge_index.tolist()]

    @functools.cached_property
    def _senses(self) -> dict[str, tuple[str, ...]]:
        words, names = self._sense_parts
        return {word: tuple(entry.split(" ")) for word, entry in zip(words, names)}

    @classmethod
    def _closure(
        cls, wn: WordNetCorpusReader, seeds: list[Synset], *, strict: bool = False
    ) -> ConceptVocabulary:
        """The seeds that reach the root by ordinary hypernyms, with every such chain."""
        reaches: dict[str, bool] = {}
        kept = [s for s in seeds if _reaches_root(s, reaches)]
        if strict:
            _check_reach_root([s for s in seeds if not reaches[s.name()]])
        if not kept:
            raise InputError(
                f"expected words or synsets with a noun synset under {ROOT}, "
                f"found none among {len(seeds)} noun synsets"
            )
        nodes: dict[str, Synset] = {}
        edges = []
        stack = list(kept)
        while stack:
            synset = stack.pop()
            if synset.name() in nodes:
                continue
            nodes[synset.name()] = synset
            for hypernym in synset.hypernyms():
                # A hypernym off every root chain (none in WordNet 3.0) would
                # add a dangling branch, so chains are followed only upwards
                # through synsets that themselves reach the root.
                if _reaches_root(hypernym, reaches):
                    edges.append((hypernym.name(), synset.name()))
                    stack.append(hypernym)
        return cls._from_synsets_and_edges(wn, list(nodes.values()), edges)

    @classmethod
    def _from_synsets_and_edges(
        cls, wn: WordNetCorpusReader, synsets: list[Synset], edges: list[tuple[str, str]]
    ) -> ConceptVocabulary:
        names = [s.name() for s in synsets]
        inside = set(names)
        senses = {}
        for word in {lemma.lower() for s in synsets for lemma in s.lemma_names()}:
            # nltk's synsets() also returns senses of the word's base forms
            # ("glasses" -> glass.n.01); keep only synsets that have the word.
            ordered = [
                s.name()
                for s in wn.synsets(word, pos="n")
                if s.name() in inside and word in {l.lower() for l in s.lemma_names()}
            ]
            if ordered:
                senses[word.replace("_", " ")] = list(dict.fromkeys(ordered))
        return cls(
            names,
            edges,
            [s.definition() for s in synsets],
            [s.lemma_names() for s in synsets],
            senses,
            wordnet=wn,
        )

    # ------------------------------------------------------------ serialising

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description, enough to rebuild the vocabulary without WordNet.

        Returns:
            {"names": [K str], "edges": [[parent, child], ...],
            "definitions": [K str], "lemmas": [K lists of str],
            "senses": {word: [names in sense order]}}.
        """
        return {
            "names": list(self.names),
            "edges": [list(edge) for edge in self.edges],
            "definitions": list(self._definitions),
            "lemmas": [list(entry) for entry in self._lemmas],
            "senses": {word: list(names) for word, names in sorted(self._senses.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConceptVocabulary:
        """Rebuilds a vocabulary saved with `to_dict` (no WordNet needed).

        Args:
            data: the mapping `to_dict` returned (e.g. read back from JSON);
                "senses" may be missing (words then list synsets by name).

        Returns:
            The vocabulary.

        Raises:
            InputError: the mapping does not follow `check_vocabulary_dict`'s schema, or
                the parts are inconsistent.
        """
        check_vocabulary_dict(data)
        return cls(
            data["names"],
            [tuple(edge) for edge in data["edges"]],
            data["definitions"],
            data["lemmas"],
            data.get("senses"),
        )

    def fingerprint(self) -> str:
        """A stable hash of (names, edges), for cache keys.

        Returns:
            64 hexadecimal characters (SHA-256), the same across processes and
            machines for the same vocabulary.
        """
        known = self.__dict__.get("_fingerprint")  # read back with a cached preset
        if known is not None:
            return known
        payload = json.dumps(
            {"names": list(self.names), "edges": [list(e) for e in self.edges]},
            separators=(",", ":"),
            ensure_ascii=True,
        )
        return hashlib.sha256(payload.encode("ascii")).hexdigest()

    # ------------------------------------------------------------- lookups

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __getstate__(self) -> dict[str, Any]:
        # The WordNet reader only sharpens error messages; it holds open
        # archives and should not travel to other processes.
        return {**self.__dict__, "_wordnet": None}

    def __repr__(self) -> str:
        return (
            f"ConceptVocabulary({len(self.names)} synsets, {len(self.edges)} edges, "
            f"fingerprint {self.fingerprint()[:12]})"
        )

    def index(self, name: str) -> int:
        """The position of a synset in `names`.

        Args:
            name: a synset name inside the vocabulary.

        Returns:
            Its index in [0, K).

        Raises:
            ConceptError: the name is not in the vocabulary (with suggestions).
        """
        i = self._index.get(name) if isinstance(name, str) else None
        if i is None:
            raise ConceptError(self._not_found_message(name))
        return i

    def definition(self, name: str) -> str:
        """The WordNet gloss of a synset in the vocabulary."""
        return self._definitions[self.index(name)]

    def subtree(self, name: str) -> list[str]:
        """The synset and all its descendants inside the vocabulary, in `names` order."""
        return [self.names[j] for j in self._subtree_indices(self.index(name))]

    def children(self, name: str) -> list[str]:
        """The direct hyponyms of a synset inside the vocabulary, in `names` order."""
        i = self.index(name)
        rows = self._child_members[self._child_offsets[i] : self._child_offsets[i + 1]]
        return [self.names[j] for j in rows]

    def parents(self, name: str) -> list[str]:
        """The direct hypernyms of a synset inside the vocabulary, in `names` order."""
        i = self.index(name)
        rows = self._parent_members[self._parent_offsets[i] : self._parent_offsets[i + 1]]
        return [self.names[j] for j in rows]

    def leaves(self, name: str) -> list[str]:
        """The members of a synset's subtree that have no children in the vocabulary.

        A synset without children is its own single leaf.
        """
        members = self._subtree_indices(self.index(name))
        childless = np.diff(self._child_offsets)[members] == 0
        return [self.names[j] for j in members[childless]]

    def _subtree_indices(self, i: int) -> np.ndarray:
        return self.subtree_members[self.subtree_offsets[i] : self.subtree_offsets[i + 1]]

    def texts(self, mode: str = "definition") -> list[str]:
        """The text encoded for each synset, aligned with `names`.

        Args:
            mode: "definition" (the WordNet gloss, the paper's choice),
                "lemmas" (lemma names, underscores to spaces, joined with
                ", "), or a template containing "{}", filled with the first
                lemma name (underscores to spaces), e.g. "a photo of a {}".

        Returns:
            K strings.

        Raises:
            InputError: `mode` is none of these.
        """
        if mode == "definition":
            return list(self._definitions)
        if mode == "lemmas":
            return [", ".join(l.replace("_", " ") for l in entry) for entry in self._lemmas]
        if isinstance(mode, str) and "{}" in mode:
            return [mode.replace("{}", entry[0].replace("_", " ")) for entry in self._lemmas]
        raise InputError(
            f"expected a text mode in {TEXT_MODES} or a template containing '{{}}', found {mode!r}"
        )

    def resolve(self, concepts: str | Iterable[str]) -> list[str]:
        """Turns user-named concepts into synset names of this vocabulary.

        A concept is a synset name (`dog.n.01`) or a plain word (`dog`,
        `hot dog`; case, and underscores versus spaces, do not matter), which
        stands for all of that word's noun synsets inside the vocabulary, in
        WordNet's sense order. Every problem in the request is reported at once.

        Args:
            concepts: one concept, or a list of them.

        Returns:
            Synset names inside the vocabulary, in request order.

        Raises:
            ConceptError: the list is empty; a name is unknown, a verb,
                adjective or adverb synset, or outside the vocabulary; a word
                names no synset of the vocabulary (each with close
                suggestions); or a synset is requested more than once.
        """
        if isinstance(concepts, str):
            concepts = [concepts]
        requested = list(concepts)
        if not requested:
            raise ConceptError("expected at least one concept, found an empty list")
        resolved: list[tuple[str, str]] = []  # (synset name, the request it came from)
        problems = []
        for item in requested:
            try:
                resolved += [(name, item) for name in self._resolve_one(item)]
            except ConceptError as error:
                problems.append(str(error))
        origins: dict[str, list[str]] = {}
        for name, item in resolved:
            origins.setdefault(name, []).append(item)
        for name, items in origins.items():
            if len(items) > 1:
                words = [i for i in items if not _SYNSET_NAME.match(i.strip())]
                hint = (
                    "; a word stands for all its noun synsets, so name synsets to avoid overlaps"
                    if words else ""
                )
                problems.append(
                    f"{name} is requested {len(items)} times (by {', '.join(map(repr, items))})"
                    + hint
                )
        if problems:
            raise _concept_error(problems, "requested concepts")
        return [name for name, _ in resolved]

    def _resolve_one(self, item: object) -> list[str]:
        if not isinstance(item, str):
            raise ConceptError(
                f"expected a synset name or a word, found {type(item).__name__} {item!r}"
            )
        if item in self._index:
            return [item]
        match = _SYNSET_NAME.match(item.strip())
        if match is None:
            synsets = self._senses.get(_normalise_word(item))
            if synsets:
                return list(synsets)
            raise ConceptError(self._not_found_message(item))
        canonical = self._canonical_name(item.strip())
        if canonical in self._index:
            return [canonical]
        raise ConceptError(self._not_found_message(item))

    def _canonical_name(self, name: str) -> str:
        """WordNet's own name for a lemma-based name nltk accepts (`atm.n.02`)."""
        name = name.lower()
        if self._wordnet is None or name.split(".")[-2] != "n":
            return name
        synset = _wordnet_synset(self._wordnet, name)
        return name if synset is None else synset.name()

    def _not_found_message(self, item: object) -> str:
        """Why `item` names nothing in the vocabulary, with close suggestions."""
        size = f"this vocabulary of {len(self.names):,} synsets"
        if not isinstance(item, str):
            return f"expected a synset name of {size}, found {type(item).__name__} {item!r}"
        match = _SYNSET_NAME.match(item.strip())
        if match is None:
            hint = _suggest(_normalise_word(item), list(self._senses))
            return f"{item!r} is neither a synset name nor a word of {size}" + hint
        pos = match["pos"]
        head = _normalise_word(match["head"])
        if pos != "n":
            hint = _did_you_mean(self._senses.get(head, ()))
            return (
                f"{item!r} is {_article(_POS_NAMES[pos])} {_POS_NAMES[pos]} synset, "
                f"expected a noun synset (.n.)" + hint
            )
        hint = _suggest(item.strip().lower(), list(self.names))
        if not hint:
            hint = _suggest(head, list(self._senses))
        if self._wordnet is None:
            return f"{item!r} is not in {size}" + hint
        if _wordnet_synset(self._wordnet, item.strip()) is not None:
            return f"{item!r} is a WordNet noun synset outside {size}" + hint
        return f"{item!r} is not a WordNet noun synset" + hint


# ---------------------------------------------------------------------- helpers


def _preset_cache_path(name: str) -> Path:
    """The cache file of a preset: keyed by the WordNet zip's and word list's content."""
    digest = hashlib.sha256(f"{name} format {VOCABULARY_FORMAT}".encode())
    for source in (BUNDLED_WORDNET, PHYSICAL_OBJECTS):
        with open(source, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return cache_root() / "vocabularies" / f"{name}-{digest.hexdigest()[:24]}.npz"


def check_vocabulary_dict(data: object) -> None:
    """Checks a vocabulary mapping (`ConceptVocabulary.to_dict`, or its JSON) against its schema.

    The schema: an object with "names" (a list of strings), "edges" (a list of
    [parent, child] string pairs), "definitions" (a list of strings), "lemmas"
    (a list of non-empty lists of strings) and, optionally, "senses" (an object
    mapping words to lists of names).

    Raises:
        InputError: one line naming the first part that does not fit.
    """
    def fail(what: str, found: object) -> None:
        shown = repr(found)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise InputError(f"expected a vocabulary JSON object (ConceptVocabulary.to_dict) whose "
                         f"{what}, found {type(found).__name__} {shown}")

    def strings(value: object, what: str) -> None:
        if not isinstance(value, list):
            fail(f"{what} is a list of strings", value)
        for item in value:
            if not isinstance(item, str):
                fail(f"{what} holds only strings", item)

    if not isinstance(data, Mapping):
        fail("top level is an object", data)
    missing = [key for key in ("names", "edges", "definitions", "lemmas") if key not in data]
    if missing:
        raise InputError(f"expected a vocabulary dict with names, edges, definitions and "
                         f"lemmas, found no {missing}")
    strings(data["names"], '"names"')
    strings(data["definitions"], '"definitions"')
    if not isinstance(data["edges"], list):
        fail('"edges" is a list of [parent, child] pairs', data["edges"])
    for edge in data["edges"]:
        if not (isinstance(edge, (list, tuple)) and len(edge) == 2
                and all(isinstance(n, str) for n in edge)):
            fail('"edges" holds [parent, child] pairs of synset names', edge)
    if not isinstance(data["lemmas"], list):
        fail('"lemmas" is a list of lists of lemma names', data["lemmas"])
    for entry in data["lemmas"]:
        strings(entry, '"lemmas" entries')
    senses = data.get("senses")
    if senses is not None:
        if not isinstance(senses, Mapping):
            fail('"senses" is an object of word -> [synset names]', senses)
        for word, names in senses.items():
            if not isinstance(word, str):
                fail('"senses" keys are words', word)
            strings(names, f'"senses" entry {word!r}')


def _reader(wordnet: WordNetArg) -> WordNetCorpusReader:
    """A reader from a reader, an NLTK data folder, or None (the bundled WordNet 3.0)."""
    if wordnet is None or isinstance(wordnet, (str, Path)):
        return load_wordnet(wordnet)
    return wordnet


def _normalise_word(word: str) -> str:
    """Lower case, underscores to spaces, runs of white space to one space."""
    return " ".join(word.replace("_", " ").lower().split())


def _looks_like_noun_synset(text: str) -> bool:
    match = _SYNSET_NAME.match(text)
    return match is not None and match["pos"] == "n"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _did_you_mean(options: Iterable[str]) -> str:
    """"; did you mean a, b?" for the first few options, or "" when there are none."""
    options = list(options)[:_SUGGESTIONS]
    return f"; did you mean {', '.join(options)}?" if options else ""


def _concept_error(problems: list[str], where: str) -> ConceptError:
    """One error that lists every problem found (one per line when several)."""
    if len(problems) == 1:
        return ConceptError(problems[0])
    return ConceptError(
        f"{len(problems)} problems in the {where}:\n  - " + "\n  - ".join(problems)
    )


def _suggest(query: str, candidates: list[str]) -> str:
    return _did_you_mean(difflib.get_close_matches(query, candidates, n=_SUGGESTIONS))


def _wordnet_synset(wn: WordNetCorpusReader, name: str) -> Synset | None:
    """The synset nltk finds for `name`, or None."""
    try:
        return wn.synset(name)
    except Exception:  # nltk raises WordNetError or ValueError for unknown names
        return None


def _lookup_synsets(wn: WordNetCorpusReader, names: list[str]) -> list[Synset]:
    """The noun synsets of these names; every bad name is reported at once."""
    if not names:
        raise InputError("expected at least one synset name, found an empty list")
    found, problems = [], []
    for name in names:
        match = _SYNSET_NAME.match(name.strip()) if isinstance(name, str) else None
        if match is None:
            problems.append(f"{name!r} is not a synset name (expected e.g. 'dog.n.01')")
            continue
        if match["pos"] != "n":
            pos = _POS_NAMES[match["pos"]]
            hint = _did_you_mean(s.name() for s in wn.synsets(match["head"], pos="n"))
            problems.append(
                f"{name!r} is {_article(pos)} {pos} synset, expected a noun synset" + hint
            )
            continue
        synset = _wordnet_synset(wn, name.strip())
        if synset is not None:
            found.append(synset)
            continue
        senses = [s.name() for s in wn.synsets(match["head"], pos="n")]
        hint = _did_you_mean(senses) or _suggest(
            match["head"].lower(), list(wn.all_lemma_names("n"))
        )
        problems.append(f"{name!r} is not a WordNet noun synset" + hint)
    if problems:
        raise _concept_error(problems, "synset names")
    return found


def _check_reach_root(synsets: list[Synset]) -> None:
    """Rejects explicitly named synsets with no ordinary hypernym chain to the root."""
    reaches: dict[str, bool] = {}
    stranded = [s for s in synsets if not _reaches_root(s, reaches)]
    if stranded:
        described = [
            f"{s.name()} (an instance of {', '.join(h.name() for h in s.instance_hypernyms())})"
            if s.instance_hypernyms() else s.name()
            for s in stranded
        ]
        raise ConceptError(
            f"expected synsets with an ordinary hypernym chain to {ROOT}, found instances "
            f"that have none: {'; '.join(described)}; name their classes instead, or use "
            f"ConceptVocabulary.all_nouns(), which keeps instances"
        )


def _reaches_root(synset: Synset, memo: dict[str, bool]) -> bool:
    """Whether a chain of ordinary (not instance) hypernyms leads to `entity.n.01`."""
    name = synset.name()
    if name not in memo:
        memo[name] = False  # WordNet's hypernyms are acyclic; this only guards recursion
        memo[name] = name == ROOT or any(
            [_reaches_root(h, memo) for h in synset.hypernyms()]
        )
    return memo[name]


def _csr(rows: np.ndarray, columns: np.ndarray, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR offsets [num_rows+1] and members for (row, column) pairs already sorted by row."""
    offsets = np.zeros(num_rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=num_rows), out=offsets[1:])
    return offsets, np.asarray(columns, dtype=np.int32)


def _subtree_csr(
    child_offsets: np.ndarray,
    child_members: np.ndarray,
    parent_offsets: np.ndarray,
    parent_members: np.ndarray,
    names: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every concept's subtree as CSR (offsets [K+1], members [M], segment ids [M]).

    Walks the DAG top-down (Kahn's order) collecting each concept's ancestors,
    itself included: the subtree of c is the set of concepts whose ancestors
    include c. Ancestor sets are small (about the depth of WordNet), so this
    stays cheap even for all 82,115 nouns.

    Raises:
        InputError: the edges form a cycle.
    """
    k = len(names)
    in_degree = np.diff(parent_offsets).astype(np.int64)
    ready = [i for i in range(k) if in_degree[i] == 0]
    ancestors: list[frozenset[int] | None] = [None] * k
    seen = 0
    children_of = np.split(child_members, child_offsets[1:-1]) if k else []
    while ready:
        i = ready.pop()
        seen += 1
        parents = parent_members[parent_offsets[i] : parent_offsets[i + 1]]
        own = {i}
        for p in parents.tolist():
            own |= ancestors[p]
        ancestors[i] = frozenset(own)
        for c in children_of[i].tolist():
            in_degree[c] -= 1
            if in_degree[c] == 0:
                ready.append(c)
    if seen != k:
        stuck = [names[i] for i in range(k) if ancestors[i] is None][:5]
        raise InputError(f"expected an acyclic hierarchy, found a cycle through {stuck}")
    sizes = np.fromiter((len(a) for a in ancestors), dtype=np.int64, count=k)
    segment = np.fromiter(
        (c for a in ancestors for c in a), dtype=np.int32, count=int(sizes.sum())
    )
    member = np.repeat(np.arange(k, dtype=np.int32), sizes)
    order = np.lexsort((member, segment))
    segment, member = segment[order], member[order]
    offsets, members = _csr(segment, member, k)
    return offsets, members, segment

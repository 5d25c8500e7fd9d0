"""WordNet concept vocabularies: the synsets ConVis explains and their hierarchy.

A `ConceptVocabulary` is a set T of WordNet noun synsets closed upwards under
hypernyms, with the hypernym -> hyponym edges between them (a DAG rooted at
`entity.n.01`) and, for every concept, its subtree (itself and all its
descendants inside T) as compact index arrays that the sweeps use to reduce
over every subtree at once (docs/method.md, section 1).

Everything here is NumPy and plain Python; WordNet (through nltk) is needed
only to build a vocabulary (`convis_jax.core.vocabulary_building`), not to use
one: `to_dict()` / `from_dict()` carry everything the methods need. The index
arrays come from `convis_jax.core.hierarchy`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convis_jax.core import vocabulary_building as building
from convis_jax.core.cache import load_arrays, save_arrays
from convis_jax.core.hierarchy import csr, subtree_csr
from convis_jax.core.vocabulary_building import (
    POS_NAMES,
    SYNSET_NAME,
    article,
    concept_error,
    did_you_mean,
    normalise_word,
    suggest,
    wordnet_synset,
)
from convis_jax.errors import ConceptError, InputError, warn

if TYPE_CHECKING:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    WordNetArg = WordNetCorpusReader | str | Path | None

#: Text modes accepted by `ConceptVocabulary.texts` besides templates with "{}".
TEXT_MODES = ("definition", "lemmas")


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
        self._child_offsets, self._child_members = csr(edge_index[:, 0], edge_index[:, 1], k)
        by_child = edge_index[np.lexsort((edge_index[:, 0], edge_index[:, 1]))]
        self._parent_offsets, self._parent_members = csr(by_child[:, 1], by_child[:, 0], k)
        self.subtree_offsets, self.subtree_members, self.subtree_segment_ids = subtree_csr(
            self._child_offsets, self._child_members, self._parent_offsets, self._parent_members,
            self.names,
        )
        for array in (self.subtree_offsets, self.subtree_members, self.subtree_segment_ids):
            array.flags.writeable = False

        if senses is None:
            by_word: dict[str, list[str]] = {}
            for name, words in zip(self.names, self._lemmas):
                for word in dict.fromkeys(normalise_word(w) for w in words):
                    by_word.setdefault(word, []).append(name)
            senses = by_word
        self._senses = {
            normalise_word(word): tuple(n for n in synsets if n in self._index)
            for word, synsets in senses.items()
        }
        self._senses = {word: synsets for word, synsets in self._senses.items() if synsets}

    # ------------------------------------------------------------------ builders

    @classmethod
    def from_words(cls, words: Iterable[str], *, wordnet: WordNetArg = None) -> ConceptVocabulary:
        """The paper's construction: every noun synset of every word, closed upwards.

        Args, Raises: as `convis_jax.core.vocabulary_building.parts_from_words`.
        """
        return cls._from_parts(building.parts_from_words(words, wordnet=wordnet))

    @classmethod
    def from_synsets(cls, names: Iterable[str], *, wordnet: WordNetArg = None) -> ConceptVocabulary:
        """The given noun synsets and every ordinary hypernym chain above them.

        Args, Raises: as `convis_jax.core.vocabulary_building.parts_from_synsets`.
        """
        return cls._from_parts(building.parts_from_synsets(names, wordnet=wordnet))

    @classmethod
    def from_file(cls, path: str | Path, *, wordnet: WordNetArg = None) -> ConceptVocabulary:
        """A vocabulary from a text file of words and synset names, one per line.

        Args, Raises: as `convis_jax.core.vocabulary_building.parts_from_file`.
        """
        return cls._from_parts(building.parts_from_file(path, wordnet=wordnet))

    @classmethod
    def physical_objects(cls, *, wordnet: WordNetArg = None) -> ConceptVocabulary:
        """The paper's vocabulary: `from_words` over its 1,980 physical-object words.

        With WordNet 3.0 this gives 7,080 synsets and 7,314 edges
        (`convis_jax.core.vocabulary_building.physical_objects_parts`).
        """
        return cls._from_parts(building.physical_objects_parts(wordnet=wordnet))

    @classmethod
    def all_nouns(cls, *, wordnet: WordNetArg = None) -> ConceptVocabulary:
        """Every noun synset of WordNet (82,115 in WordNet 3.0), instances included.

        Args: as `convis_jax.core.vocabulary_building.all_nouns_parts`.
        """
        return cls._from_parts(building.all_nouns_parts(wordnet=wordnet))

    @classmethod
    def _from_parts(cls, parts: building.VocabularyParts) -> ConceptVocabulary:
        return cls(parts.names, parts.edges, parts.definitions, parts.lemmas, parts.senses,
                   wordnet=parts.wordnet)

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
        path = building.preset_cache_path(name) if cache else None
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
            InputError: the mapping does not follow `building.check_vocabulary_dict`'s schema, or
                the parts are inconsistent.
        """
        building.check_vocabulary_dict(data)
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
                words = [i for i in items if not SYNSET_NAME.match(i.strip())]
                hint = (
                    "; a word stands for all its noun synsets, so name synsets to avoid overlaps"
                    if words else ""
                )
                problems.append(
                    f"{name} is requested {len(items)} times (by {', '.join(map(repr, items))})"
                    + hint
                )
        if problems:
            raise concept_error(problems, "requested concepts")
        return [name for name, _ in resolved]

    def _resolve_one(self, item: object) -> list[str]:
        if not isinstance(item, str):
            raise ConceptError(
                f"expected a synset name or a word, found {type(item).__name__} {item!r}"
            )
        if item in self._index:
            return [item]
        match = SYNSET_NAME.match(item.strip())
        if match is None:
            synsets = self._senses.get(normalise_word(item))
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
        synset = wordnet_synset(self._wordnet, name)
        return name if synset is None else synset.name()

    def _not_found_message(self, item: object) -> str:
        """Why `item` names nothing in the vocabulary, with close suggestions."""
        size = f"this vocabulary of {len(self.names):,} synsets"
        if not isinstance(item, str):
            return f"expected a synset name of {size}, found {type(item).__name__} {item!r}"
        match = SYNSET_NAME.match(item.strip())
        if match is None:
            hint = suggest(normalise_word(item), list(self._senses))
            return f"{item!r} is neither a synset name nor a word of {size}" + hint
        pos = match["pos"]
        head = normalise_word(match["head"])
        if pos != "n":
            hint = did_you_mean(self._senses.get(head, ()))
            return (
                f"{item!r} is {article(POS_NAMES[pos])} {POS_NAMES[pos]} synset, "
                f"expected a noun synset (.n.)" + hint
            )
        hint = suggest(item.strip().lower(), list(self.names))
        if not hint:
            hint = suggest(head, list(self._senses))
        if self._wordnet is None:
            return f"{item!r} is not in {size}" + hint
        if wordnet_synset(self._wordnet, item.strip()) is not None:
            return f"{item!r} is a WordNet noun synset outside {size}" + hint
        return f"{item!r} is not a WordNet noun synset" + hint

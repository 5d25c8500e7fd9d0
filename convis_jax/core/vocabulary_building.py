"""Building concept vocabularies from WordNet: word lists, synset names, files, presets.

The paper's construction walks WordNet (through nltk) from seed synsets up
every chain of ordinary hypernyms to `entity.n.01`; the functions here return
the parts a `ConceptVocabulary` is made of (`VocabularyParts`), and
`ConceptVocabulary.from_words` and its siblings wrap them. Also here: synset
names and the error messages with suggestions that both building and
`ConceptVocabulary.resolve` give, the schema of a saved vocabulary, and the
cache key of a preset.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from convis_jax.core.cache import cache_root
from convis_jax.core.wordnet import BUNDLED_WORDNET, load_wordnet
from convis_jax.errors import ConceptError, InputError

if TYPE_CHECKING:
    from nltk.corpus.reader.wordnet import Synset, WordNetCorpusReader

    WordNetArg = WordNetCorpusReader | str | Path | None

ROOT = "entity.n.01"
PHYSICAL_OBJECTS = Path(__file__).resolve().parents[1] / "data" / "physical_objects.txt"

#: A synset name as nltk writes it: head, part of speech, sense number.
SYNSET_NAME = re.compile(r"^(?P<head>\S+)\.(?P<pos>[nvasr])\.(?P<sense>\d+)$")
POS_NAMES = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective satellite", "r": "adverb"}
_SUGGESTIONS = 5
#: Bumped whenever building a preset, or its cached form, changes: older entries are ignored.
VOCABULARY_FORMAT = 2


@dataclasses.dataclass(frozen=True)
class VocabularyParts:
    """What `ConceptVocabulary(...)` is built from (its constructor's arguments).

    Attributes:
        names: K distinct synset names.
        edges: (hypernym, hyponym) name pairs between `names`.
        definitions: K WordNet glosses, aligned with `names`.
        lemmas: K lists of lemma names, aligned with `names`.
        senses: lower-case word -> the synset names it names, in WordNet's sense order.
        wordnet: the reader the parts came from.
    """

    names: list[str]
    edges: list[tuple[str, str]]
    definitions: list[str]
    lemmas: list[list[str]]
    senses: dict[str, list[str]]
    wordnet: WordNetCorpusReader


# ------------------------------------------------------------------ builders


def parts_from_words(words: Iterable[str], *, wordnet: WordNetArg = None) -> VocabularyParts:
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
        The vocabulary's parts.

    Raises:
        InputError: `words` is a single string, or no word has a noun
            synset that reaches the root.
    """
    if isinstance(words, str):
        raise InputError(f"expected a list of words, found the string {words!r}")
    wn = wordnet_reader(wordnet)
    seeds = [s for word in words for s in wn.synsets(word, pos="n")]
    return closure(wn, seeds)


def parts_from_synsets(names: Iterable[str], *, wordnet: WordNetArg = None) -> VocabularyParts:
    """The given noun synsets and every ordinary hypernym chain above them.

    Names follow nltk (`dog.n.01`); a lemma-based name nltk accepts (such
    as `domestic_dog.n.01`) is replaced by the synset's own name.

    Args:
        names: noun synset names.
        wordnet: a WordNet reader, an NLTK data folder, or None for the
            bundled WordNet 3.0.

    Returns:
        The vocabulary's parts.

    Raises:
        InputError: `names` is a single string or empty.
        ConceptError: a name is not a WordNet noun synset, or the synset has
            only instance hypernyms (an instance such as `sun.n.01` has no
            ordinary hypernym chain to the root; `all_nouns()` keeps them).
    """
    if isinstance(names, str):
        raise InputError(f"expected a list of synset names, found the string {names!r}")
    wn = wordnet_reader(wordnet)
    seeds = _lookup_synsets(wn, list(names))
    return closure(wn, seeds, strict=True)


def parts_from_file(path: str | Path, *, wordnet: WordNetArg = None) -> VocabularyParts:
    """A vocabulary from a text file of words and synset names, one per line.

    Lines shaped like a noun synset name (`dog.n.01`: no spaces, `.n.` and
    a sense number) are synset names, treated as by `parts_from_synsets`; other
    lines are words, treated as by `parts_from_words`. Blank lines and lines
    starting with `#` are skipped.

    Args:
        path: the UTF-8 text file.
        wordnet: a WordNet reader, an NLTK data folder, or None for the
            bundled WordNet 3.0.

    Returns:
        The vocabulary's parts.

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
    synset_names = [e for e in entries if looks_like_noun_synset(e)]
    words = [e for e in entries if not looks_like_noun_synset(e)]
    wn = wordnet_reader(wordnet)
    named = _lookup_synsets(wn, synset_names) if synset_names else []
    _check_reach_root(named)
    seeds = named + [s for word in words for s in wn.synsets(word, pos="n")]
    return closure(wn, seeds)


def physical_objects_parts(*, wordnet: WordNetArg = None) -> VocabularyParts:
    """The paper's vocabulary: `parts_from_words` over its 1,980 physical-object words.

    With WordNet 3.0 this gives 7,080 synsets and 7,314 edges. The word
    list ships as `convis_jax/data/physical_objects.txt` (MIT licence,
    from the ConVis authors' repository).

    Args:
        wordnet: a WordNet reader, an NLTK data folder, or None for the
            bundled WordNet 3.0.

    Returns:
        The vocabulary's parts.
    """
    words = PHYSICAL_OBJECTS.read_text(encoding="utf-8").splitlines()
    return parts_from_words([w for w in words if w.strip()], wordnet=wordnet)


def all_nouns_parts(*, wordnet: WordNetArg = None) -> VocabularyParts:
    """Every noun synset of WordNet (82,115 in WordNet 3.0).

    Unlike `parts_from_words`, instance synsets (e.g. `sun.n.01`) are kept; they
    hang below their classes by instance-hypernym edges, so that the
    subtree of `entity.n.01` is the whole vocabulary.

    Args:
        wordnet: a WordNet reader, an NLTK data folder, or None for the
            bundled WordNet 3.0.

    Returns:
        The vocabulary's parts.
    """
    wn = wordnet_reader(wordnet)
    synsets = list(wn.all_synsets("n"))
    edges = [
        (h.name(), s.name())
        for s in synsets
        for h in s.hypernyms() + s.instance_hypernyms()
    ]
    return parts_from_synsets_and_edges(wn, synsets, edges)


def closure(
    wn: WordNetCorpusReader, seeds: list[Synset], *, strict: bool = False
) -> VocabularyParts:
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
    return parts_from_synsets_and_edges(wn, list(nodes.values()), edges)


def parts_from_synsets_and_edges(
    wn: WordNetCorpusReader, synsets: list[Synset], edges: list[tuple[str, str]]
) -> VocabularyParts:
    """The parts of these synsets and edges, with each lemma's senses inside them."""
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
    return VocabularyParts(
        names=names,
        edges=edges,
        definitions=[s.definition() for s in synsets],
        lemmas=[s.lemma_names() for s in synsets],
        senses=senses,
        wordnet=wn,
    )


# ---------------------------------------------------------------------- helpers


def preset_cache_path(name: str) -> Path:
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


def wordnet_reader(wordnet: WordNetArg) -> WordNetCorpusReader:
    """A reader from a reader, an NLTK data folder, or None (the bundled WordNet 3.0)."""
    if wordnet is None or isinstance(wordnet, (str, Path)):
        return load_wordnet(wordnet)
    return wordnet


def normalise_word(word: str) -> str:
    """Lower case, underscores to spaces, runs of white space to one space."""
    return " ".join(word.replace("_", " ").lower().split())


def looks_like_noun_synset(text: str) -> bool:
    match = SYNSET_NAME.match(text)
    return match is not None and match["pos"] == "n"


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def did_you_mean(options: Iterable[str]) -> str:
    """"; did you mean a, b?" for the first few options, or "" when there are none."""
    options = list(options)[:_SUGGESTIONS]
    return f"; did you mean {', '.join(options)}?" if options else ""


def concept_error(problems: list[str], where: str) -> ConceptError:
    """One error that lists every problem found (one per line when several)."""
    if len(problems) == 1:
        return ConceptError(problems[0])
    return ConceptError(
        f"{len(problems)} problems in the {where}:\n  - " + "\n  - ".join(problems)
    )


def suggest(query: str, candidates: list[str]) -> str:
    return did_you_mean(difflib.get_close_matches(query, candidates, n=_SUGGESTIONS))


def wordnet_synset(wn: WordNetCorpusReader, name: str) -> Synset | None:
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
        match = SYNSET_NAME.match(name.strip()) if isinstance(name, str) else None
        if match is None:
            problems.append(f"{name!r} is not a synset name (expected e.g. 'dog.n.01')")
            continue
        if match["pos"] != "n":
            pos = POS_NAMES[match["pos"]]
            hint = did_you_mean(s.name() for s in wn.synsets(match["head"], pos="n"))
            problems.append(
                f"{name!r} is {article(pos)} {pos} synset, expected a noun synset" + hint
            )
            continue
        synset = wordnet_synset(wn, name.strip())
        if synset is not None:
            found.append(synset)
            continue
        senses = [s.name() for s in wn.synsets(match["head"], pos="n")]
        hint = did_you_mean(senses) or suggest(
            match["head"].lower(), list(wn.all_lemma_names("n"))
        )
        problems.append(f"{name!r} is not a WordNet noun synset" + hint)
    if problems:
        raise concept_error(problems, "synset names")
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

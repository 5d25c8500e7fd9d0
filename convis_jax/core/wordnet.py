"""WordNet 3.0, offline, from the zip shipped with the package.

`convis_jax/data/wordnet.zip` holds Princeton WordNet 3.0 (Debian's
`wordnet-base` and `wordnet-sense-index` files, plus `lexnames` and the
Princeton licence; `scripts/build_wordnet.py` builds it) laid out like NLTK's
`corpora/wordnet.zip`. `load_wordnet()` opens it with nltk's own reader, so
WordNet works right after `pip install`, with `NLTK_DATA` unset and no
network. A user may point at another NLTK data folder instead; the bundled
3.0 stays the default because the paper's vocabulary sizes depend on it.

nltk is imported only when a reader is opened, so importing this module is
cheap.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from convis_jax.errors import InputError

if TYPE_CHECKING:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

#: The WordNet 3.0 database shipped with the package (top folder `wordnet/`).
BUNDLED_WORDNET = Path(__file__).resolve().parents[1] / "data" / "wordnet.zip"


def load_wordnet(nltk_data: str | Path | None = None) -> WordNetCorpusReader:
    """Open WordNet with nltk's reader; by default the bundled WordNet 3.0.

    Readers are cached per resolved path (opening one parses the lemma index,
    about a second), so every vocabulary built in a process shares one reader;
    `clear_wordnet_cache()` drops them. The reader does not load the
    multilingual (OMW) data.

    nltk only reads files under its data roots, so the zip or folder used is
    appended to `nltk.data.path` (once) for the rest of the process.

    Args:
        nltk_data: None for the bundled WordNet 3.0; otherwise an NLTK data
            folder holding `corpora/wordnet/` or `corpora/wordnet.zip`, or a
            zip laid out like NLTK's `wordnet.zip` (top folder `wordnet/`).

    Returns:
        An `nltk.corpus.reader.wordnet.WordNetCorpusReader`.

    Raises:
        InputError: `nltk_data` does not exist or holds no WordNet.
    """
    path = BUNDLED_WORDNET if nltk_data is None else Path(nltk_data).expanduser()
    if not path.exists():
        raise InputError(
            f"expected an NLTK data folder or a wordnet.zip, found nothing at {str(path)!r}"
        )
    return _open_reader(str(path.resolve()))


@functools.lru_cache(maxsize=4)
def _open_reader(path: str) -> WordNetCorpusReader:
    """The reader for one resolved path; cached because opening costs seconds."""
    import nltk.data

    # nltk refuses to read files outside its data roots, and it judges each
    # read (the data files are opened lazily), so the root has to stay listed.
    if path not in nltk.data.path:
        nltk.data.path.append(path)
    if path.endswith(".zip"):
        resources, search = ("wordnet/",), [path]
    else:
        resources, search = ("corpora/wordnet/", "corpora/wordnet.zip/wordnet/"), [path]
    root = None
    for resource in resources:
        try:
            root = nltk.data.find(resource, paths=search)
            break
        except LookupError:
            continue
    if root is None:
        wanted = "a top folder wordnet/" if path.endswith(".zip") else (
            "corpora/wordnet/ or corpora/wordnet.zip"
        )
        raise InputError(f"expected WordNet in {path!r} ({wanted}), found none")
    with warnings.catch_warnings():
        # nltk warns that the multilingual functions are unavailable: we pass
        # no OMW reader on purpose, the English WordNet is all ConVis needs.
        warnings.simplefilter("ignore", UserWarning)
        return _english_reader_class()(root, None)


def _english_reader_class() -> type:
    """nltk's `WordNetCorpusReader` without the OMW version mapping."""
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class EnglishWordNetReader(WordNetCorpusReader):
        """nltk's reader, minus the mapping of OMW data onto this WordNet's version.

        nltk builds that mapping in `__init__` by opening the `corpora/wordnet`
        resource from its default search path; for the bundled zip there is no
        such resource (and elsewhere it may be a different WordNet). The
        mapping only serves multilingual (OMW) lookups, which this reader
        does not offer, so it is skipped.
        """

        def map_wn(self, version="wordnet"):
            return None

    return EnglishWordNetReader


def clear_wordnet_cache() -> None:
    """Forget the readers `load_wordnet` cached (they are rebuilt on the next call)."""
    _open_reader.cache_clear()

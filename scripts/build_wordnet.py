"""Build `convis_jax/data/wordnet.zip`, the WordNet 3.0 database shipped with the package.

The zip is laid out like NLTK's own `corpora/wordnet.zip` (every file under a
top folder `wordnet/`), so it also works when copied into an NLTK data folder.
Its files are copied byte for byte from Debian's `wordnet-base` and
`wordnet-sense-index` packages (installed under /usr/share/wordnet), plus:

* `lexnames`, which Debian leaves out but NLTK's reader needs: the 45
  lexicographer file names of WordNet 3.0 (numbers 00-44, from the
  `lexnames(5WN)` manual page), one `NN<TAB>name<TAB>category` line each;
* `LICENSE`, the Princeton WordNet 3.0 licence, taken from Debian's copyright
  file (also written to `convis_jax/data/LICENSES/WordNet-3.0.txt`).

The output is deterministic (sorted members, fixed timestamps and modes), so
rebuilding from the same Debian files gives the same bytes.

Usage (from the repository root, with `apt-get install wordnet-base
wordnet-sense-index` done):

    python scripts/build_wordnet.py [--source /usr/share/wordnet] [--out convis_jax/data]
"""

import argparse
import hashlib
import sys
import zipfile
from pathlib import Path

# The database files of the two Debian packages (dpkg -L wordnet-base
# wordnet-sense-index), as installed in the source folder.
DEBIAN_FILES = (
    # wordnet-base
    "adj.exc",
    "adv.exc",
    "cntlist.rev",
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "noun.exc",
    "sentidx.vrb",
    "sents.vrb",
    "verb.exc",
    # wordnet-sense-index
    "cntlist",
    "frames.vrb",
    "index.sense",
)

# WordNet 3.0's lexicographer files in number order; the third column is the
# syntactic category (1 noun, 2 verb, 3 adjective, 4 adverb), see lexnames(5WN).
LEXNAMES = (
    ("adj.all", 3),
    ("adj.pert", 3),
    ("adv.all", 4),
    ("noun.Tops", 1),
    ("noun.act", 1),
    ("noun.animal", 1),
    ("noun.artifact", 1),
    ("noun.attribute", 1),
    ("noun.body", 1),
    ("noun.cognition", 1),
    ("noun.communication", 1),
    ("noun.event", 1),
    ("noun.feeling", 1),
    ("noun.food", 1),
    ("noun.group", 1),
    ("noun.location", 1),
    ("noun.motive", 1),
    ("noun.object", 1),
    ("noun.person", 1),
    ("noun.phenomenon", 1),
    ("noun.plant", 1),
    ("noun.possession", 1),
    ("noun.process", 1),
    ("noun.quantity", 1),
    ("noun.relation", 1),
    ("noun.shape", 1),
    ("noun.state", 1),
    ("noun.substance", 1),
    ("noun.time", 1),
    ("verb.body", 2),
    ("verb.change", 2),
    ("verb.cognition", 2),
    ("verb.communication", 2),
    ("verb.competition", 2),
    ("verb.consumption", 2),
    ("verb.contact", 2),
    ("verb.creation", 2),
    ("verb.emotion", 2),
    ("verb.motion", 2),
    ("verb.perception", 2),
    ("verb.possession", 2),
    ("verb.social", 2),
    ("verb.stative", 2),
    ("verb.weather", 2),
    ("adj.ppl", 3),
)

# The earliest timestamp a zip can hold; any fixed value makes builds repeatable.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_TOP = "wordnet/"


def lexnames_text() -> str:
    """The `lexnames` file: `NN<TAB>name<TAB>category` for the 45 files, in order."""
    return "".join(f"{i:02d}\t{name}\t{cat}\n" for i, (name, cat) in enumerate(LEXNAMES))


def licence_text(copyright_file: Path) -> str:
    """The Princeton WordNet 3.0 licence, cut out of Debian's machine-readable copyright file.

    Args:
        copyright_file: /usr/share/doc/wordnet-base/copyright (DEP-5 format).

    Returns:
        The licence as plain text, with a header line naming its source.

    Raises:
        ValueError: the file has no `License: WordNet3.0` paragraph.
    """
    lines = copyright_file.read_text(encoding="utf-8").splitlines()
    try:
        start = lines.index("License: WordNet3.0")
    except ValueError:
        raise ValueError(f"{copyright_file} has no 'License: WordNet3.0' paragraph") from None
    body = []
    # DEP-5 continuation lines start with one space; " ." stands for a blank line.
    for line in lines[start + 1 :]:
        if not line.startswith(" "):
            break
        body.append("" if line == " ." else line[1:])
    header = (
        "WordNet 3.0 licence (Princeton University), as shipped with the WordNet\n"
        "database files bundled in convis_jax/data/wordnet.zip.\n"
        "Source of the text: Debian package wordnet-base, "
        "/usr/share/doc/wordnet-base/copyright.\n"
    )
    return header + "\n" + "\n".join(body).strip() + "\n"


def _write_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16  # rw-r--r--, whoever builds it
    info.create_system = 3  # Unix, so the mode above is honoured
    archive.writestr(info, data, compresslevel=9)


def build(source: Path, copyright_file: Path, out_dir: Path) -> Path:
    """Write `wordnet.zip` and `LICENSES/WordNet-3.0.txt` into `out_dir`.

    Args:
        source: folder holding Debian's WordNet 3.0 database files.
        copyright_file: Debian's copyright file holding the Princeton licence.
        out_dir: the package data folder (convis_jax/data).

    Returns:
        The path of the written zip.

    Raises:
        FileNotFoundError: a Debian database file is missing from `source`.
    """
    missing = [name for name in DEBIAN_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"expected the WordNet 3.0 files of Debian's wordnet-base and "
            f"wordnet-sense-index in {source}; missing: {', '.join(missing)}"
        )
    licence = licence_text(copyright_file)
    members = {name: (source / name).read_bytes() for name in DEBIAN_FILES}
    members["lexnames"] = lexnames_text().encode("ascii")
    members["LICENSE"] = licence.encode("utf-8")

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "LICENSES").mkdir(exist_ok=True)
    (out_dir / "LICENSES" / "WordNet-3.0.txt").write_text(licence, encoding="utf-8")

    zip_path = out_dir / "wordnet.zip"
    tmp_path = zip_path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp_path, "w") as archive:
        folder = zipfile.ZipInfo(_TOP, date_time=_ZIP_EPOCH)
        folder.external_attr = (0o40755 << 16) | 0x10  # directory, rwxr-xr-x
        folder.create_system = 3
        archive.writestr(folder, b"")
        for name in sorted(members):
            _write_member(archive, _TOP + name, members[name])
    tmp_path.replace(zip_path)
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument(
        "--copyright", type=Path, default=Path("/usr/share/doc/wordnet-base/copyright")
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "convis_jax" / "data"
    )
    args = parser.parse_args(argv)
    zip_path = build(args.source, args.copyright, args.out)
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    print(f"wrote {zip_path} ({zip_path.stat().st_size:,} bytes, sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Resumable per-image result logs and the JSON files of the evaluation scripts."""

from __future__ import annotations

import json
import os
from pathlib import Path

from convis_jax.errors import InputError

# ---------------------------------------------------------------------------
# Resumable result logs


class ResultLog:
    """Per-item results of a long evaluation, appended to a JSON-lines file as they come.

    The first line is `{"settings": {...}}`, every other line one item's
    result, a JSON object with a string "key". A rerun opens the same file:
    items already there are done. Settings must match the file's, so that
    results made with different models or options never mix. A last line cut
    short by a crash is dropped (that item is simply done again).

    Args:
        path: the JSON-lines file (created with its folder when missing).
        settings: JSON-able description of everything the results depend on.
        restart: discard the file's results and start afresh.

    Raises:
        InputError: when the file was written with other settings, or is not
            a result log (the message says which and how to start afresh).
    """

    def __init__(self, path: str | Path, settings: dict, *, restart: bool = False):
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings))
        self._records: dict[str, dict] = {}
        if restart and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"settings": self.settings}) + "\n", encoding="utf-8")

    def _read(self) -> None:
        raw = self.path.read_bytes()
        if not raw:  # created, then nothing written: no results to keep
            self.path.write_text(json.dumps({"settings": self.settings}) + "\n", encoding="utf-8")
            return
        lines = raw.split(b"\n")
        # Everything after the last newline is a line a crash cut short.
        complete, tail = lines[:-1], lines[-1]
        if not complete:
            raise InputError(f"{self.path}: expected a result log, found a file cut inside "
                             f"its first line; delete it or start afresh (--restart)")
        try:
            header = json.loads(complete[0])
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or "settings" not in header:
            raise InputError(f"{self.path}: expected a result log starting with its settings, "
                             f"found {complete[0][:80]!r}; pass another file or --restart")
        if header["settings"] != self.settings:
            differ = sorted(
                k for k in set(header["settings"]) | set(self.settings)
                if header["settings"].get(k) != self.settings.get(k)
            )
            raise InputError(
                f"{self.path}: expected results made with the same settings, found different "
                f"{', '.join(differ)}; pass another output file or --restart"
            )
        for number, line in enumerate(complete[1:], start=2):
            try:
                record = json.loads(line)
                key = record["key"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{self.path}:{number}: expected a result record, found "
                                 f"{line[:80]!r}; pass another file or --restart") from None
            self._records[key] = record
        if tail:
            with self.path.open("r+b") as f:
                f.truncate(len(raw) - len(tail))

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> dict:
        """The record of a done item.

        Raises:
            KeyError: when the item is not done.
        """
        return self._records[key]

    def append(self, key: str, record: dict) -> None:
        """Writes one item's result (a JSON-able dict) and flushes it to disk."""
        record = {"key": key, **record}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._records[key] = json.loads(json.dumps(record))


# ---------------------------------------------------------------------------
# Files of the evaluation scripts


def default_log_path(out: str | Path) -> Path:
    """The per-image log beside a results file: results.json -> results.images.jsonl."""
    out = Path(out)
    return out.with_name(f"{out.stem if out.suffix == '.json' else out.name}.images.jsonl")


def write_json(path: str | Path, document: dict) -> Path:
    """Writes a JSON document atomically (folders created): a crash leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path



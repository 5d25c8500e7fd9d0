"""Tests of convis_jax.evaluation.logs: resumable per-image results and their settings."""

import json
from pathlib import Path

import pytest

from convis_jax import evaluation
from convis_jax.errors import InputError


def test_result_log_settings_and_damage(tmp_path):
    path = tmp_path / "deep" / "log.jsonl"
    log = evaluation.ResultLog(path, {"a": 1, "b": (1, 2)})
    log.append("k1", {"v": 1})
    assert "k1" in evaluation.ResultLog(path, {"a": 1, "b": [1, 2]})  # tuples read back as lists
    with pytest.raises(InputError, match="different a; pass another output file or --restart"):
        evaluation.ResultLog(path, {"a": 2, "b": [1, 2]})
    fresh = evaluation.ResultLog(path, {"a": 2}, restart=True)
    assert len(fresh) == 0
    assert json.loads(path.read_text().splitlines()[0]) == {"settings": {"a": 2}}
    path.write_text(path.read_text() + "not json\n" + '{"key": "k2"}\n')
    with pytest.raises(InputError, match=r"log.jsonl:2: expected a result record"):
        evaluation.ResultLog(path, {"a": 2})
    other = tmp_path / "other.jsonl"
    other.write_text('{"something": 1}\n')
    with pytest.raises(InputError, match="starting with its settings"):
        evaluation.ResultLog(other, {"a": 2})


def test_default_log_path():
    assert evaluation.default_log_path("r/results.json") == Path("r/results.images.jsonl")
    assert evaluation.default_log_path("results") == Path("results.images.jsonl")

"""The embedded model: assembled once from the data packages, verified, rebuilt when broken."""

from __future__ import annotations

import json

import pytest

from monitor import models
from monitor.errors import MonitorError


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MONITOR_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_assembles_verified_model_once(cache):
    directory = models.assemble_embedded_model()
    assert directory.parent == cache
    assert sorted(p.name for p in directory.iterdir()) == [
        "assembled.json", "config.json", "model.bin", "tokenizer.json", "vocabulary.txt",
    ]  # fmt: skip
    assert models._sha256(directory / "model.bin") == models.EMBEDDED_SHA256
    mtime = (directory / "model.bin").stat().st_mtime_ns
    assert models.assemble_embedded_model() == directory
    assert (directory / "model.bin").stat().st_mtime_ns == mtime, "a valid cache is not rebuilt"


def test_corrupt_cache_is_rebuilt(cache):
    directory = models.assemble_embedded_model()
    with open(directory / "model.bin", "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00" * 16)
    assert not models._cache_is_valid(directory)
    models.assemble_embedded_model()
    assert models._sha256(directory / "model.bin") == models.EMBEDDED_SHA256


def test_half_written_cache_is_rebuilt(cache):
    # An interrupted first run: the directory exists, with part of model.bin and no marker.
    directory = models.embedded_model_dir()
    directory.mkdir(parents=True)
    (directory / "model.bin").write_bytes(b"partial")
    models.assemble_embedded_model()
    assert json.loads((directory / "assembled.json").read_text())["sha256"] == models.EMBEDDED_SHA256
    assert not [p for p in cache.iterdir() if p.name.startswith(".assembling-")], "no staging left behind"


def test_model_names(cache, tmp_path):
    assert models.resolve_model(None).embedded
    assert models.resolve_model("base").embedded
    with pytest.raises(MonitorError, match="has no model.bin"):
        models.resolve_model(str(tmp_path))
    not_a_dir = tmp_path / "model.bin"
    not_a_dir.write_bytes(b"x")
    with pytest.raises(MonitorError, match="is a file"):
        models.resolve_model(str(not_a_dir))
    assert models.resolve_model("org/whisper-large-ct2").path == "org/whisper-large-ct2"

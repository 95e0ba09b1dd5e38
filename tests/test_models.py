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
    assert models.file_sha256(directory / "model.bin") == models.EMBEDDED_SHA256
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
    assert models.file_sha256(directory / "model.bin") == models.EMBEDDED_SHA256


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


def test_catalogue_names_base_with_the_embedded_hash():
    base = models.load_catalogue()["base"]
    assert base.embedded and base.sha256 == models.EMBEDDED_SHA256
    assert base.measured["corpus_real"]["cer"] == pytest.approx(0.185)


def test_catalogue_name_uses_its_directory_and_verify_checks_the_hash(tmp_path, monkeypatch):
    import shutil

    shutil.copy(models.models_dir() / models.CATALOGUE_FILE, tmp_path)
    monkeypatch.setenv("MONITOR_MODELS_DIR", str(tmp_path))
    assert models.resolve_model("small").path == "Systran/faster-whisper-small", "no local copy: the hub name"
    copy = tmp_path / "cache" / "faster-whisper-small"
    copy.mkdir(parents=True)
    (copy / "model.bin").write_bytes(b"weights")
    assert models.resolve_model("small").path == str(copy), "a local copy comes first"

    entry = models.load_catalogue()["small"]
    ok, detail = models.verify_model(entry)
    assert ok is None and models.file_sha256(copy / "model.bin") in detail, "no hash recorded: report the one found"
    entry.sha256, entry.size = models.file_sha256(copy / "model.bin"), 7
    assert models.verify_model(entry)[0] is True
    (copy / "model.bin").write_bytes(b"WEIGHTS")
    ok, detail = models.verify_model(entry)
    assert ok is False and "sha256" in detail


def test_models_command_lists_and_verifies(tmp_path):
    import subprocess
    import sys

    listed = subprocess.run([sys.executable, "-m", "monitor", "models"], capture_output=True, text=True, check=True)
    assert listed.stdout.split()[0] == "base" and "0.185" in listed.stdout
    unknown = subprocess.run([sys.executable, "-m", "monitor", "models", "verify", "nope"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "not in the catalogue" in unknown.stderr

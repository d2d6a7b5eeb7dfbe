"""One registry type for every plug-in: KD losses, datasets, models and tasks.

Each kind of plug-in is a `Registry` instance held by the module that owns the kind:

* KD losses: `lskd_tf.losses.KD_LOSSES` (``register_kd_loss`` / ``get_kd_loss``);
* image datasets: `lskd_tf.data.source.SOURCES` (``lskd_tf.data.register`` / ``get_source``);
* image models: `lskd_tf.models.MODELS` (``lskd_tf.models.register`` / ``get``);
* translation models and datasets: `lskd_tf.tasks.translation.models.MODELS` and
  `lskd_tf.tasks.translation.data.DATASETS`;
* tasks: `lskd_tf.tasks.TASKS` (``tasks.register`` / ``tasks.get``).

All of them spell names the same tolerant way (any case, ``-`` for ``_``: "WRN-40-2" is
``wrn_40_2``) and answer an unknown name with the same one-line ValueError
(`unknown_name_message`). This module is TensorFlow-free: ``flags.py`` reaches the task
registry before TensorFlow loads.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_MISSING: Any = object()


def normalize(name: str) -> str:
    """The spelling every registry compares: lower case, ``_`` for ``-``, no outer spaces."""
    return name.strip().lower().replace("-", "_")


def unknown_name_message(kind: str, name: Any, known: Iterable[str]) -> str:
    """The one line every registry (and `Task.check_model`/`check_dataset`) raises with.

    >>> unknown_name_message("model", "resnet21", ["resnet20", "vgg8"])
    "unknown model 'resnet21'; did you mean 'resnet20'? available: resnet20, vgg8"
    """
    known = sorted(known)
    close = difflib.get_close_matches(normalize(str(name)), known, n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ";"
    return f"unknown {kind} {name!r}{hint} available: {', '.join(known)}"


class Registry(Generic[T]):
    """Names -> plug-ins of one kind, with one spelling rule and one error.

    ``register(name, item)`` adds an entry; ``register(name)`` is the same as a class
    decorator. ``get(name)`` returns the entry, ``resolve(name)`` its registered name;
    both accept any case and ``-`` for ``_`` and raise one-line ValueErrors
    (`unknown_name_message`). ``available()`` lists every name, sorted.

    How built-in entries are found without a central list (lazy, on first need: the
    first ``available()`` or a ``get`` of a name not yet registered):

    * ``package``: every public module of that package (``pkgutil.iter_modules``, names
      not starting with ``_``) is imported once; a module registers its entries when
      imported. A new module in ``lskd_tf/data/`` or ``lskd_tf/models/`` is therefore
      found without editing an ``__init__``.
    * ``built_in``: ``{name: module}``; the module is imported when that name is first
      asked for, and the name is listed by ``available()`` without importing it (the
      task registry stays TensorFlow-free).

    ``replace``: whether registering another item under a taken name replaces it (the
    default, so a notebook can re-register a changed class) or raises ValueError.
    """

    def __init__(
        self,
        kind: str,
        *,
        package: str | None = None,
        built_in: Mapping[str, str] | None = None,
        replace: bool = True,
        check: Callable[[str, T], None] | None = None,
    ) -> None:
        self.kind = kind
        self._package = package
        self._built_in = dict(built_in or {})
        self._replace = replace
        self._check = check
        self._entries: dict[str, T] = {}
        self._package_loaded = package is None

    def register(self, name: str, item: T = _MISSING) -> Any:
        """Add ``item`` as ``name``; without ``item``, a decorator that does so."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")

        def add(item: T) -> T:
            if self._check is not None:
                self._check(name, item)
            old = self._entries.get(name, _MISSING)
            if old is not _MISSING and old is not item and not self._replace:
                raise ValueError(f"a {self.kind} named {name!r} is already registered")
            self._entries[name] = item
            return item

        return add if item is _MISSING else add(item)

    def available(self) -> list[str]:
        """Every name, registered or built-in (sorted)."""
        self._load_package()
        return sorted(set(self._entries) | set(self._built_in))

    def resolve(self, name: str) -> str:
        """The registered name ``name`` means (tolerant spelling); ValueError if none."""
        if not isinstance(name, str):
            raise ValueError(f"{self.kind} must be a string, got {name!r}")
        if name in self._entries:
            return name
        key = self._match(name)
        if key not in self._entries:
            self._load_package()
            if key in self._built_in:
                importlib.import_module(self._built_in[key])
            key = self._match(name)
        if key not in self._entries:
            raise ValueError(unknown_name_message(self.kind, name, self.available()))
        return key

    def get(self, name: str) -> T:
        """The entry registered as ``name`` (tolerant spelling); ValueError if none."""
        return self._entries[self.resolve(name)]

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) of every entry, loading built-in ones (sorted by name)."""
        for name in list(self._built_in):
            self.resolve(name)
        return [(name, self._entries[name]) for name in self.available()]

    def loaded(self) -> dict[str, T]:
        """The entries registered so far, by name, without importing any built-in one."""
        return dict(self._entries)

    def _match(self, name: str) -> str | None:
        wanted = normalize(name)
        for key in (*self._entries, *self._built_in):
            if normalize(key) == wanted:
                return key
        return None

    def _load_package(self) -> None:
        if self._package_loaded:
            return
        self._package_loaded = True  # first: a module may look names up while importing
        package = importlib.import_module(self._package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self._package}.{module.name}")

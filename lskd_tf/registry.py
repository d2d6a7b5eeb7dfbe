"""Looking names up in a registry: one spelling rule and one error for every registry.

Image models (`lskd_tf.models`) and translation models
(`lskd_tf.tasks.translation.models`) are chosen by name; both accept any case and "-"
for "_" ("WRN-40-2", "ResNet56") and answer an unknown name with one line naming the
closest matches and every choice.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def resolve(name: str, known: Iterable[str], what: str = "model name") -> str:
    """The registered key ``name`` means; a one-line ValueError when there is none.

    >>> resolve("WRN-40-2", ["wrn_40_2", "resnet8"])
    'wrn_40_2'
    """
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string, got {name!r}")
    known = sorted(known)
    key = name.strip().lower().replace("-", "_")
    if key not in known:
        close = difflib.get_close_matches(key, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown {what} {name!r}.{hint} Available: {', '.join(known)}.")
    return key

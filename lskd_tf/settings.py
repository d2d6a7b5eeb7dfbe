"""Settings added after runs existed: how a dataclass marks them and leaves them out.

A run's record and identity list its settings' fields. When a new field is added (its
default being what every older run did), the runs recorded before it existed must keep
their identity, or every one of them would be refused as "changed". Such a field is
declared with ``metadata=ADDED_LATER`` and `without_later_defaults` leaves it out while
it holds its default.

Example:
    >>> warmup_steps: int = dataclasses.field(default=0, metadata=ADDED_LATER)
"""

from __future__ import annotations

import dataclasses

ADDED_LATER = {"added_later": True}


def without_later_defaults(settings, values: dict) -> dict:
    """``values`` (from ``settings``' fields) without added-later fields at their default."""
    return {
        name: value
        for name, value in values.items()
        if not any(
            field.name == name and field.metadata.get("added_later") and value == field.default
            for field in dataclasses.fields(settings)
        )
    }

"""Class -> coarse-group mappings: ImageNet's shipped WordNet groups and user mappings.

`imagenet_groups.json` (next to this file) is generated once by
`tools/make_imagenet_groups.py` from WordNet 3.0 (Debian `wordnet-base`): each of
the 1000 ImageNet classes (a WordNet noun synset, e.g. n01440764) is assigned the
highest ancestor on its first hypernym path from `entity.n.01` that covers at most 30
ImageNet classes (203 groups, e.g. terrier, working_dog, insect, snake); the script
can also cut at a fixed depth.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np

GROUPS_FILE = "imagenet_groups.json"


@functools.lru_cache(maxsize=1)
def imagenet_groups() -> dict[str, Any]:
    """The shipped ImageNet grouping.

    Returns:
        dict with `wnids` (1000, label order), `class_names` (first WordNet lemma),
        `group` (int array (1000,)), `group_names` and `source` (the rule used).
    """
    text = resources.files("lskd_tf.data").joinpath(GROUPS_FILE).read_text()
    data = json.loads(text)
    data["group"] = np.asarray(data["group"], dtype=np.int64)
    return data


def resolve_mapping(
    mapping: Any, num_classes: int, class_names: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """Turn a user's class -> group mapping into `(superclass ids (K,), group names)`.

    Accepted forms:
      * a sequence of K group ids (ints) or K group names (strings), index = class;
      * a dict `{class: group}` covering every class, where a class is its index or
        its name and a group is an int id or a name;
      * a path to a JSON file holding either of the above.

    Group names are sorted for the ids when groups are given by name; int groups keep
    their ids and are named `"group_<id>"`.

    Example:
        >>> resolve_mapping(["a", "b", "a"], 3, ["x", "y", "z"])
        (array([0, 1, 0]), ['a', 'b'])
    """
    if isinstance(mapping, (str, os.PathLike)):
        try:
            with open(mapping) as f:
                mapping = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(
                f"superclass_mapping file {os.fspath(mapping)!r} could not be read as JSON: {error}"
            ) from None
    if isinstance(mapping, Mapping):
        index_of = {name: i for i, name in enumerate(class_names)}
        groups: list[Any] = [None] * num_classes
        for key, group in mapping.items():
            if isinstance(key, str) and key in index_of:
                i = index_of[key]
            elif str(key).lstrip("-").isdigit() and 0 <= int(key) < num_classes:
                i = int(key)
            else:
                raise ValueError(
                    f"superclass_mapping key {key!r} is neither a class name nor a class "
                    f"index in [0, {num_classes})"
                )
            groups[i] = group
        missing = [class_names[i] for i, g in enumerate(groups) if g is None]
        if missing:
            raise ValueError(
                f"superclass_mapping misses {len(missing)} class(es), e.g. {missing[:3]}; "
                "map every class to a group"
            )
    else:
        groups = list(mapping)
        if len(groups) != num_classes:
            raise ValueError(
                f"superclass_mapping has {len(groups)} entries but the dataset has "
                f"{num_classes} classes; give one group per class"
            )
    if all(isinstance(g, (int, np.integer)) for g in groups):
        ids = np.asarray(groups, dtype=np.int64)
        if ids.min() < 0:
            raise ValueError("superclass_mapping group ids must be >= 0")
        return ids, [f"group_{i}" for i in range(int(ids.max()) + 1)]
    names = sorted({str(g) for g in groups})
    position = {name: i for i, name in enumerate(names)}
    return np.asarray([position[str(g)] for g in groups], dtype=np.int64), names

"""Generate lskd_tf/data/imagenet_groups.json: ImageNet's 1000 classes -> WordNet groups.

Run once (the output is shipped):

    apt-get install -y wordnet-base            # WordNet 3.0 database files
    python tools/make_imagenet_groups.py                 # shipped: --max_group_size 30

ImageNet class ids are WordNet 3.0 noun offsets (n01440764 = offset 01440764 in
data.noun). For each class we follow its *first* hypernym pointer (`@` or `@i`) up to
`entity.n.01`, giving a path root -> ... -> class. Two ways to cut that path:

* `--max_group_size M` (default, M = 30): the group is the *highest* synset on the path
  that covers at most M of the 1000 classes (e.g. terrier, working_dog, insect, snake).
  A fixed depth from the root gives very uneven groups on ImageNet (at depth 6: 83
  groups, one of 398 classes and 46 singletons), this cut gives 203 groups of <= 30.
* `--depth d`: the synset at position d of the path (0 = entity); a class whose path
  is shorter is its own group.

The label order is TFDS's (`imagenet2012/labels.txt`, sorted wnids).
"""

from __future__ import annotations

import argparse
import collections
import json
import os

import tensorflow_datasets as tfds

DEFAULT_WORDNET = "/usr/share/wordnet"
OUTPUT = os.path.join(os.path.dirname(__file__), "..", "lskd_tf", "data", "imagenet_groups.json")


def read_nouns(wordnet_dir: str) -> dict[str, tuple[str, str | None]]:
    """offset -> (first lemma, first hypernym offset or None), parsed from data.noun."""
    nouns = {}
    with open(os.path.join(wordnet_dir, "data.noun"), encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):  # license header
                continue
            fields = line.split(" | ")[0].split()
            offset, word_count = fields[0], int(fields[3], 16)
            lemma = fields[4]
            rest = fields[4 + 2 * word_count :]
            pointer_count = int(rest[0])
            hypernym = None
            for i in range(pointer_count):
                symbol, target, pos = rest[1 + 4 * i : 4 + 4 * i]
                if symbol in ("@", "@i") and pos == "n":
                    hypernym = target
                    break
            nouns[offset] = (lemma, hypernym)
    return nouns


def path_to_root(offset: str, nouns) -> list[str]:
    path = [offset]
    while nouns[path[-1]][1] is not None:
        path.append(nouns[path[-1]][1])
    return path[::-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet_dir", default=DEFAULT_WORDNET)
    parser.add_argument("--depth", type=int, default=None, help="cut at a fixed depth")
    parser.add_argument("--max_group_size", type=int, default=30)
    parser.add_argument("--output", default=OUTPUT)
    args = parser.parse_args()

    labels_file = os.path.join(
        os.path.dirname(tfds.__file__), "datasets", "imagenet2012", "labels.txt"
    )
    with open(labels_file) as f:
        wnids = [line.strip() for line in f if line.strip()]
    assert len(wnids) == 1000, len(wnids)
    nouns = read_nouns(args.wordnet_dir)
    paths = [path_to_root(wnid[1:], nouns) for wnid in wnids]
    if args.depth is not None:
        rule = f"depth {args.depth}"
        group_offsets = [path[min(args.depth, len(path) - 1)] for path in paths]
    else:
        rule = f"highest ancestor covering <= {args.max_group_size} classes"
        covered = collections.Counter(offset for path in paths for offset in path)
        group_offsets = [
            next(o for o in path if covered[o] <= args.max_group_size) for path in paths
        ]
    ordered = sorted(set(group_offsets), key=lambda o: nouns[o][0])
    index = {o: i for i, o in enumerate(ordered)}
    group_names = [f"{nouns[o][0].lower()}.n{o}" for o in ordered]
    data = {
        "source": f"WordNet 3.0 data.noun, first hypernym path, {rule}",
        "wnids": wnids,
        "class_names": [nouns[w[1:]][0].lower() for w in wnids],
        "group": [index[o] for o in group_offsets],
        "group_names": group_names,
    }
    with open(args.output, "w") as f:
        json.dump(data, f, indent=0)
        f.write("\n")
    sizes = collections.Counter(data["group"])
    print(
        f"wrote {args.output}: {len(ordered)} groups ({rule}); "
        f"sizes min {min(sizes.values())} median {sorted(sizes.values())[len(sizes) // 2]} "
        f"max {max(sizes.values())}; singletons {sum(v == 1 for v in sizes.values())}"
    )


if __name__ == "__main__":
    main()

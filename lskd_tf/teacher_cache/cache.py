"""Building, opening and reading teacher-output caches (see `lskd_tf.teacher_cache`)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lskd_tf import atomic, claims, data
from lskd_tf.checksums import weights_sha256
from lskd_tf.distiller import with_teacher_logits
from lskd_tf.teacher_cache.spec import CacheSpec

FORMAT_VERSION = 1
DEFAULT_SPEC = CacheSpec()


class StaleCacheError(ValueError):
    """A teacher cache that does not belong to this teacher, data or augmentation."""


def _write_json(path: Path, content: dict) -> None:
    atomic.write_json(path, content, sort_keys=True)


def _data_options(options: dict) -> dict:
    """Dataset options that change the examples (not how they are shuffled), as JSON."""
    kept = {k: v for k, v in options.items() if k != "shuffle_buffer"}
    return json.loads(json.dumps(kept, sort_keys=True, default=str))


def largest_logits(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, indices) of the k largest logits along the last axis, largest first (ties:
    the lower index first, as `torch.topk` and `tf.math.top_k`), in ``logits``' dtype."""
    num_classes = logits.shape[-1]
    if not 0 < k < num_classes:
        raise ValueError(f"topk must be in 1..{num_classes - 1}, got {k}")
    indices = np.argsort(-logits, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(logits, indices, -1), indices


def compress_topk(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, indices, rest_logit) of the k largest logits along the last axis.

    ``rest_logit = logsumexp(other logits) - log(C - k)``: giving it to every other class
    keeps their total softmax mass at T = 1.
    """
    num_classes = logits.shape[-1]
    logits = logits.astype(np.float64)
    values, indices = largest_logits(logits, k)
    rest = logits.copy()
    np.put_along_axis(rest, indices, -np.inf, -1)
    peak = rest.max(-1, keepdims=True)
    rest_logit = peak[..., 0] + np.log(np.exp(rest - peak).sum(-1)) - math.log(num_classes - k)
    return values, indices, rest_logit


def expand_topk(values, indices, rest_logit, num_classes: int) -> np.ndarray:
    """Full float32 logits from `compress_topk`'s output."""
    full = np.repeat(np.asarray(rest_logit, np.float32)[..., None], num_classes, -1)
    np.put_along_axis(full, np.asarray(indices, np.int64), np.asarray(values, np.float32), -1)
    return full


def check_dataset(spec: CacheSpec, dataset: str, options: dict | None = None) -> None:
    """A one-line ValueError when `dataset` cannot have this kind of cache."""
    _Views(dataset, options or {}, spec)


class _Views:
    """How the views of one dataset are drawn and rendered (exact or sampled)."""

    def __init__(self, name: str, options: dict, spec: CacheSpec):
        self.source = data.get_source(name)
        self.options = self.source.resolve_options(options)
        self.info = data.get_info(name, **self.options)
        self.spec = spec
        self.discrete = self.source.discrete_views(self.options)
        if spec.mode == "exact":
            if self.discrete is None:
                raise ValueError(
                    f"dataset {name!r} has a continuous augmentation: an exact teacher cache "
                    "would need infinitely many views; use mode='sampled' "
                    "(command line: --teacher_cache=sampled --cache_views=K)"
                )
            self.count = self.discrete.count
            self.recipe = self.discrete.describe()
        else:
            self.count = spec.views
            self.recipe = {"recipe": f"{name} train_image", "views": spec.views,
                           "view_seed": spec.view_seed}  # fmt: skip

    def train_image(self, image, seed):
        return self.source.train_image(image, seed, self.options)

    def sampled_seed(self, index, view):
        """The stateless seed of sampled view `view` of example `index`."""
        position = tf.cast(index, tf.int64) * self.count + tf.cast(view, tf.int64)
        base = tf.constant([self.spec.view_seed, 0], tf.int64)
        return tf.random.experimental.stateless_fold_in(base, position)

    def render(self, image, index, view):
        """View `view` of example `index`, as float32 [0, 255] at the input size."""
        if self.spec.mode == "exact":
            return self.discrete.render(image, view)
        return self.train_image(image, self.sampled_seed(index, view))

    def choose(self, seed, index):
        """The pipeline hook: (augmentation seed, view) an example shows this epoch."""
        if self.spec.mode == "exact":
            return seed, self.discrete.draw(seed)
        view = tf.random.stateless_uniform([], seed, 0, self.count, dtype=tf.int32)
        return self.sampled_seed(index, view), view


class TeacherCache:
    """An opened, validated teacher cache (see the module docstring).

    Use `build` (builds, resumes or opens) or `TeacherCache.open` (opens only).
    """

    def __init__(self, directory: Path, manifest: dict, views: _Views, data_dir: str | None):
        self.directory = Path(directory)
        self.manifest = manifest
        self.views = views
        self.data_dir = data_dir
        self.num_examples = manifest["num_examples"]
        self.num_views = manifest["num_views"]
        self.num_classes = manifest["num_classes"]
        self.topk = manifest["storage"]["topk"]
        self.labels = np.load(self.directory / "labels.npy", mmap_mode="r")
        if self.topk:
            self._values = np.load(self.directory / "topk_values.npy", mmap_mode="r")
            self._indices = np.load(self.directory / "topk_indices.npy", mmap_mode="r")
            self._rest = np.load(self.directory / "rest_logit.npy", mmap_mode="r")
        else:
            self._logits = np.load(self.directory / "logits.npy", mmap_mode="r")

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike,
        teacher: keras.Model,
        dataset: str,
        *,
        spec: CacheSpec = DEFAULT_SPEC,
        split: str | None = None,
        data_dir: str | None = None,
        options: dict | None = None,
        verify_samples: int = 4,
    ) -> TeacherCache:
        """Open a complete cache, or raise `StaleCacheError` saying what is wrong.

        Checks the manifest against this teacher's weights, the dataset and `spec`,
        that the build finished, and recomputes ``verify_samples`` stored views with
        the teacher (0 skips that check).
        """
        directory = Path(directory)
        views = _Views(dataset, options or {}, spec)
        expected = cache_key(teacher, dataset, views, split=split)
        manifest = _read_manifest(directory)
        if manifest is None:
            raise StaleCacheError(f"no teacher cache in {directory}; build it with "
                                  "lskd_tf.teacher_cache.build")  # fmt: skip
        _check_key(directory, manifest["key"], expected)
        done = _images_done(directory)
        if done < manifest["num_examples"]:
            raise StaleCacheError(
                f"the teacher cache in {directory} is incomplete ({done} of "
                f"{manifest['num_examples']} images); run lskd_tf.teacher_cache.build "
                "again to resume it"
            )
        cache = cls(directory, manifest, views, data_dir)
        if verify_samples:
            cache.verify(teacher, verify_samples)
        return cache

    # -------------------------------------------------------------- reading

    def logits(self, index, view) -> np.ndarray:
        """float32 teacher logits of examples `index` shown as views `view` ([B, C])."""
        index = np.asarray(index, np.int64)
        view = np.asarray(view, np.int64)
        if self.topk:
            return expand_topk(
                self._values[index, view],
                self._indices[index, view],
                self._rest[index, view],
                self.num_classes,
            )
        return np.asarray(self._logits[index, view], np.float32)

    def _lookup(self, index, view, labels):
        stored = self.labels[index]
        if not np.array_equal(stored, labels):
            i = int(np.flatnonzero(stored != labels)[0])
            raise StaleCacheError(
                f"the teacher cache in {self.directory} does not match the data: example "
                f"{int(index[i])} has label {int(labels[i])} but the cache says "
                f"{int(stored[i])} (the dataset changed); delete the directory to rebuild it"
            )
        return self.logits(index, view)

    def attach_logits(self, images, labels, index, view):
        """Batch map: ``(images, labels, index, view) -> ({inputs, teacher_logits}, labels)``."""
        logits = tf.numpy_function(self._lookup, [index, view, labels], tf.float32)
        logits = tf.ensure_shape(logits, [None, self.num_classes])
        return with_teacher_logits(images, logits), labels

    def train_fn(
        self, batch_size: int, seed: int, **dataset_options
    ) -> Callable[..., tf.data.Dataset]:
        """``(epoch, input_context=None) -> dataset`` of ``({inputs, teacher_logits}, labels)``.

        The same factory as online training (`lskd_tf.data.train_fn`: shuffling and
        per-epoch seeds), so an exact cache shows each example the view online
        distillation would.
        ``dataset_options`` go to `lskd_tf.data.make_dataset` (e.g. ``cache=True``).
        """
        key = self.manifest["key"]["data"]
        online = data.train_fn(
            key["name"], key["split"], global_batch_size=batch_size, seed=seed,
            data_dir=self.data_dir, choose_view=self.views.choose, **self.views.options,
            **dataset_options,
        )  # fmt: skip

        def epoch_dataset(epoch: int, input_context=None) -> tf.data.Dataset:
            batches = online(epoch, input_context=input_context)
            return batches.map(self.attach_logits, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
                tf.data.AUTOTUNE
            )

        return epoch_dataset

    # -------------------------------------------------------------- checking

    def verify(self, teacher: keras.Model, samples: int = 4) -> None:
        """Recompute a few stored views with `teacher`; `StaleCacheError` if they differ."""
        count = min(samples, self.num_examples)
        rng = np.random.default_rng(0)
        indices = np.sort(rng.choice(min(self.num_examples, 64), count, replace=False))
        views = rng.integers(0, self.num_views, count)
        images = _rendered(self, indices, views)
        fresh = keras.ops.convert_to_numpy(teacher(images, training=False)).astype(np.float32)
        stored = self.logits(indices, views)
        if self.topk:  # only the kept entries are exact
            kept = np.asarray(self._indices[indices, views], np.int64)
            fresh = np.take_along_axis(fresh, kept, -1)
            stored = np.take_along_axis(stored, kept, -1)
        tolerance = 2e-2 if self.manifest["storage"]["dtype"] == "float16" else 1e-3
        error = np.abs(fresh - stored) / np.maximum(1.0, np.abs(fresh))
        if not np.all(error <= tolerance):
            raise StaleCacheError(
                f"the teacher cache in {self.directory} disagrees with the teacher on "
                f"example {int(indices[np.argmax(error.max(-1))])} (relative error "
                f"{float(error.max()):.3g} > {tolerance}): it is stale or corrupt; delete "
                "the directory to rebuild it"
            )


# ------------------------------------------------------------------ building


def cache_key(teacher: keras.Model, dataset: str, views: _Views, *, split: str | None) -> dict:
    """What a cache depends on: teacher weights, data, augmentation and storage."""
    split = views.source.check_split(split or views.info.train_split)
    spec = views.spec
    return {
        "format": FORMAT_VERSION,
        "teacher_weights_sha256": weights_sha256(teacher),
        "data": {"name": dataset, "split": split, "options": _data_options(views.options)},
        "augmentation": views.recipe,
        "storage": {"dtype": spec.dtype, "topk": spec.topk},
    }


def _check_key(directory: Path, found: dict, expected: dict) -> None:
    if found == expected:
        return
    differences = []
    for field in sorted(set(found) | set(expected)):
        if found.get(field) != expected.get(field):
            differences.append(f"{field}: cache has {found.get(field)}, now {expected.get(field)}")
    raise StaleCacheError(
        f"the teacher cache in {directory} was built for something else ("
        + "; ".join(differences)
        + "); delete the directory to rebuild it, or use another cache directory"
    )


def _read_manifest(directory: Path) -> dict | None:
    path = directory / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None


def _images_done(directory: Path) -> int:
    path = directory / "progress.json"
    return json.loads(path.read_text())["images_done"] if path.exists() else 0


def _num_examples(views: _Views, split: str, data_dir: str | None) -> int:
    """Examples in the split (slices such as ``train[:10%]`` included)."""
    examples = views.source.examples(split, data_dir, False, views.options)
    count = int(examples.cardinality())
    if count >= 0:
        return count
    return int(examples.reduce(0, lambda n, _: n + 1))


def _view_examples(cache_like, start: int = 0, stop: int | None = None):
    """Examples start..stop of the cached split as (index, image, label), stored order."""
    key = cache_like.manifest["key"]["data"]
    source = cache_like.views.source
    examples = source.examples(key["split"], cache_like.data_dir, False, cache_like.views.options)
    examples = examples.enumerate().skip(start)
    if stop is not None:
        examples = examples.take(stop - start)
    return examples.map(lambda index, ex: (index, ex[0], tf.cast(ex[1], tf.int32)))


def _normalized(cache_like, image):
    info = cache_like.views.info
    shape = info.input_shape if image.shape.rank == 3 else (None, *info.input_shape)
    return info.normalize(tf.ensure_shape(image, shape))


def _rendered(cache: TeacherCache, indices, views) -> np.ndarray:
    """Normalized images of (example, view) pairs, read from the data."""
    wanted = {int(i): [] for i in indices}
    for position, (i, v) in enumerate(zip(indices, views)):
        wanted[int(i)].append((position, int(v)))
    out = [None] * len(indices)
    for index, image, _ in _view_examples(cache, 0, int(max(indices)) + 1):
        for position, view in wanted.get(int(index), ()):
            rendered = cache.views.render(image, index, view)
            out[position] = _normalized(cache, rendered).numpy()
    return np.stack(out)


class _Building:
    """The state of a build: manifest, memory-mapped arrays, progress."""

    def __init__(self, directory: Path, manifest: dict, views: _Views, data_dir, create: bool):
        self.directory = directory
        self.manifest = manifest
        self.views = views
        self.data_dir = data_dir
        n, v, c = manifest["num_examples"], manifest["num_views"], manifest["num_classes"]
        storage = manifest["storage"]
        mode = "w+" if create else "r+"

        def array(name, shape, dtype):
            path = directory / f"{name}.npy"
            if create or not path.exists():
                return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
            return np.lib.format.open_memmap(path, mode=mode)

        self.labels = array("labels", (n,), np.int32)
        if storage["topk"]:
            k = storage["topk"]
            self.values = array("topk_values", (n, v, k), storage["dtype"])
            self.indices = array("topk_indices", (n, v, k), np.int16 if c < 2**15 else np.int32)
            self.rest = array("rest_logit", (n, v), storage["dtype"])
        else:
            self.logits = array("logits", (n, v, c), storage["dtype"])

    def write(self, start: int, logits: np.ndarray, labels: np.ndarray) -> None:
        stop = start + len(labels)
        self.labels[start:stop] = labels
        k = self.manifest["storage"]["topk"]
        if k:
            values, indices, rest = compress_topk(logits, k)
            self.values[start:stop], self.indices[start:stop] = values, indices
            self.rest[start:stop] = rest
            arrays = (self.labels, self.values, self.indices, self.rest)
        else:
            self.logits[start:stop] = logits
            arrays = (self.labels, self.logits)
        for array in arrays:
            array.flush()  # on disk before progress says so
        _write_json(self.directory / "progress.json", {"images_done": stop})


def build(
    teacher: keras.Model,
    directory: str | os.PathLike,
    dataset: str,
    *,
    spec: CacheSpec = DEFAULT_SPEC,
    split: str | None = None,
    data_dir: str | None = None,
    options: dict | None = None,
    batch_size: int = 256,
    flush_every: int = 1024,
    max_images: int | None = None,
    verbose: bool = True,
    poll_s: float = 5.0,
    stale_after_s: float = 600.0,
) -> TeacherCache | None:
    """Build (or resume, or just open) the teacher cache of `dataset` in `directory`.

    Args:
        teacher: the frozen teacher, a built Keras model outputting logits.
        directory: where the cache lives (``<teacher run>/teacher_cache/<name>`` in studies).
        dataset: a registered dataset name (`lskd_tf.data.available()`); ``options`` are
            its options, ``split`` its training split by default.
        spec: what to cache (`CacheSpec`).
        batch_size: views per teacher forward pass.
        flush_every: images between writes of progress (the most work an interruption
            loses).
        max_images: stop after this many new images, leaving a resumable cache (None:
            finish). Returns None when stopped early.
        poll_s, stale_after_s: several processes may ask for the same cache (a sweep,
            multi-worker jobs): one claims the directory (`lskd_tf.claims`: its heartbeat
            thread keeps the claim alive however long the build takes) and builds, the
            others wait; a claim whose process died, or another host's whose heartbeat is
            older than ``stale_after_s``, is taken over and the build resumes.

    Returns the opened `TeacherCache`. A directory holding a cache for something else
    raises `StaleCacheError` and is left untouched.
    """
    directory = Path(directory)
    views = _Views(dataset, options or {}, spec)
    key = cache_key(teacher, dataset, views, split=split)
    manifest = _read_manifest(directory)
    if manifest is not None:  # before claiming: a wrong cache fails at once
        _check_key(directory, manifest["key"], key)
    waiting = False
    while not claims.try_claim(directory, stale_after_s):
        if verbose and not waiting:
            print(f"teacher cache {directory}: another process is building it; waiting",
                  flush=True)  # fmt: skip
        waiting = True
        time.sleep(poll_s)
    try:
        complete = _build_claimed(
            teacher, directory, dataset, views, key, data_dir, batch_size, flush_every,
            max_images, verbose,
        )  # fmt: skip
    finally:
        claims.release(directory)
    if not complete:
        return None
    return TeacherCache.open(
        directory, teacher, dataset, spec=spec, split=key["data"]["split"], data_dir=data_dir,
        options=options,
    )  # fmt: skip


def _build_claimed(
    teacher, directory, dataset, views, key, data_dir, batch_size, flush_every, max_images, verbose
) -> bool:
    """Create or resume the cache (this process holds the claim); True when complete."""
    split = key["data"]["split"]
    manifest = _read_manifest(directory)
    if manifest is not None:
        _check_key(directory, manifest["key"], key)
        create = False
    else:
        num_classes = int(teacher.output_shape[-1])
        if views.spec.topk >= num_classes:
            raise ValueError(
                f"cache topk must be < the {num_classes} classes, got {views.spec.topk}"
            )
        manifest = {
            "key": key,
            "num_examples": _num_examples(views, split, data_dir),
            "num_views": views.count,
            "num_classes": num_classes,
            "storage": key["storage"],
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        create = True
    state = _Building(directory, manifest, views, data_dir, create)
    if create:  # the manifest last: a directory with one always has its arrays
        _write_json(directory / "manifest.json", manifest)
    total = manifest["num_examples"]
    done = _images_done(directory)
    stop = total if max_images is None else min(total, done + max_images)
    if done < stop:
        _fill(teacher, state, done, stop, batch_size, flush_every, verbose)
    return _images_done(directory) >= total


def _fill(teacher, state: _Building, start: int, stop: int, batch_size, flush_every, verbose):
    """Run the teacher on every view of examples start..stop and write the logits."""
    num_views = state.manifest["num_views"]

    def all_views(index, image, label):
        if state.views.spec.mode == "exact":
            rendered = state.views.discrete.render_all(image)
        else:
            rendered = tf.map_fn(
                lambda view: state.views.render(image, index, view),
                tf.range(num_views),
                fn_output_signature=tf.float32,
            )
        return _normalized(state, rendered), tf.fill([num_views], label)

    batches = (
        _view_examples(state, start, stop)
        .map(all_views, num_parallel_calls=tf.data.AUTOTUNE)
        .unbatch()
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    forward = tf.function(lambda images: teacher(images, training=False))
    pending_logits, pending_labels = [], []
    written, started = start, time.time()  # the claim's thread keeps its heartbeat
    for images, labels in batches:
        pending_logits.append(keras.ops.convert_to_numpy(forward(images)).astype(np.float32))
        pending_labels.append(labels.numpy())
        rows = sum(len(chunk) for chunk in pending_labels)
        if rows >= flush_every * num_views:
            written = _flush(state, written, pending_logits, pending_labels, num_views)
            if verbose:
                rate = (written - start) / (time.time() - started)
                print(f"teacher cache {state.directory.name}: {written}/"
                      f"{state.manifest['num_examples']} images ({rate:.1f} images/s)",
                      flush=True)  # fmt: skip
    written = _flush(state, written, pending_logits, pending_labels, num_views)
    if written < stop:
        raise ValueError(
            f"the {state.manifest['key']['data']['name']} data ended after {written} examples "
            f"but its info says {state.manifest['num_examples']}; is the dataset complete?"
        )


def _flush(state: _Building, written: int, pending_logits: list, pending_labels: list, views):
    """Write the whole images among the pending rows; keep a partial image's rows pending."""
    logits = np.concatenate(pending_logits) if pending_logits else np.zeros((0, 1), np.float32)
    labels = np.concatenate(pending_labels) if pending_labels else np.zeros((0,), np.int32)
    whole = len(labels) // views * views
    if whole:
        images = whole // views
        state.write(written, logits[:whole].reshape(images, views, -1), labels[:whole:views])
        written += images
    pending_logits[:] = [logits[whole:]] if whole < len(labels) else []
    pending_labels[:] = [labels[whole:]] if whole < len(labels) else []
    return written


def cache_directory(teacher_checkpoint: str | os.PathLike, spec: CacheSpec) -> Path:
    """Where a study keeps a teacher's cache: beside the checkpoint, one per checkpoint."""
    checkpoint = Path(teacher_checkpoint)
    return checkpoint.parent / "teacher_cache" / f"{checkpoint.stem}-{spec.dirname}"


def describe(cache: TeacherCache) -> dict[str, Any]:
    """Size and shape of a cache, for logs and run.json."""
    size = sum(path.stat().st_size for path in cache.directory.glob("*.npy"))
    return {
        "directory": str(cache.directory),
        "examples": cache.num_examples,
        "views": cache.num_views,
        "classes": cache.num_classes,
        "storage": cache.manifest["storage"],
        "megabytes": round(size / 2**20, 1),
    }

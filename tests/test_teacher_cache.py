"""The teacher-output cache: exact views, same losses as online, rejection, resume."""

import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import build_tiny_cnn

import lskd_tf
from lskd_tf import data
from lskd_tf import teacher_cache as tc
from lskd_tf.data.augment import PadCropFlipViews, _split
from lskd_tf.distiller import split_teacher_logits
from lskd_tf.seeding import epoch_seed
from lskd_tf.teacher_cache import cache as cache_module

OPTIONS = {"train_per_class": 2, "test_per_class": 1}  # 200 training images, 100 classes
NUM_TRAIN = 200


def make_teacher(seed: int = 0) -> keras.Model:
    return build_tiny_cnn(100, (32, 32, 3), name=f"teacher{seed}", seed=seed)


@pytest.fixture(scope="module")
def teacher():
    return make_teacher(0)


@pytest.fixture(scope="module")
def exact_cache(teacher, tmp_path_factory):
    """An exact float32 cache of the 200-image embedded set: 162 views per image."""
    directory = tmp_path_factory.mktemp("cache") / "exact"
    spec = tc.CacheSpec("exact", dtype="float32")
    return tc.build(teacher, directory, "embedded", spec=spec, options=OPTIONS, verbose=False)


def online_epoch(batch_size: int, seed: int, epoch: int) -> tf.data.Dataset:
    return data.make_dataset("embedded", "train", global_batch_size=batch_size, training=True,
                             seed=epoch_seed(seed, epoch), **OPTIONS)  # fmt: skip


def test_pad_crop_flip_views_match_the_tf_ops():
    views = PadCropFlipViews(padding=4)
    assert views.count == 162
    image = tf.cast(tf.random.stateless_uniform([32, 32, 3], [1, 2], 0, 255, tf.int32), tf.uint8)
    for i in range(100):
        seed = tf.constant([i, 3 * i + 1], tf.int64)
        crop_seed, flip_seed = _split(seed, 2)
        padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
        expected = tf.image.stateless_random_flip_left_right(
            tf.image.stateless_random_crop(padded, [32, 32, 3], seed=crop_seed), seed=flip_seed
        )
        np.testing.assert_array_equal(views.render(image, views.draw(seed)), expected)
    every = views.render_all(image).numpy()
    assert every.shape == (162, 32, 32, 3)
    for view in range(162):
        np.testing.assert_array_equal(every[view], views.render(image, view))
    assert len({every[v].tobytes() for v in range(162)}) == 162  # all distinct
    np.testing.assert_array_equal(every[(4 * 9 + 4) * 2], image)  # centre, unflipped


def unpack(batch):
    """``({inputs, teacher_logits}, labels)`` -> (images, labels, logits)."""
    x, y = batch
    images, logits = split_teacher_logits(x)
    return images, y, logits


def test_exact_cache_shows_the_online_views_with_their_logits(exact_cache, teacher):
    assert (exact_cache.num_examples, exact_cache.num_views) == (NUM_TRAIN, 162)
    cached = exact_cache.train_fn(batch_size=32, seed=5)
    for epoch in (0, 1):
        for batch, (x_online, y_online) in zip(cached(epoch), online_epoch(32, 5, epoch)):
            x, y, logits = unpack(batch)
            np.testing.assert_array_equal(x, x_online)
            np.testing.assert_array_equal(y, y_online)
            expected = teacher(x, training=False).numpy()
            np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def distill(teacher, train_data, tmp_path, name):
    student = build_tiny_cnn(100, (32, 32, 3), name="student", seed=7)
    config = lskd_tf.TrainConfig(epochs=2, batch_size=32, learning_rate=0.1, seed=3,
                                 schedule="cosine", verbose=0)  # fmt: skip
    result = lskd_tf.distill_student(
        teacher, student, train_data, run_dir=tmp_path / name, config=config,
        distill=lskd_tf.DistillSpec(temperature=4.0),
    )  # fmt: skip
    return result.history, student.get_weights()


def test_cached_distillation_gives_the_online_losses(exact_cache, teacher, tmp_path):
    online_history, online_weights = distill(
        teacher, lambda epoch: online_epoch(32, 3, epoch), tmp_path, "online"
    )
    cached_history, cached_weights = distill(
        teacher, exact_cache.train_fn(batch_size=32, seed=3), tmp_path, "cached"
    )
    for online, cached in zip(online_history, cached_history):
        for key in ("loss", "kd_loss", "ce_loss", "top1", "agreement"):
            assert cached[key] == pytest.approx(online[key], rel=1e-5, abs=1e-6), key
    for online, cached in zip(online_weights, cached_weights):
        np.testing.assert_allclose(cached, online, rtol=1e-4, atol=1e-5)


def test_float16_storage_changes_losses_by_rounding_only(teacher, exact_cache, tmp_path):
    half = tc.build(teacher, tmp_path / "half", "embedded", options=OPTIONS, verbose=False)
    assert half.manifest["storage"] == {"dtype": "float16", "topk": 0}
    index = np.arange(NUM_TRAIN).repeat(3)
    view = np.tile([0, 81, 161], NUM_TRAIN)
    full, rounded = exact_cache.logits(index, view), half.logits(index, view)
    np.testing.assert_allclose(rounded, full, rtol=1e-3, atol=1e-3)
    kl = lskd_tf.DistillationKL(4.0)
    assert float(kl(rounded, full)) < 1e-5


def test_sampled_cache_replays_its_stored_views(teacher, tmp_path):
    spec = tc.CacheSpec("sampled", views=3, dtype="float32", view_seed=11)
    cache = tc.build(teacher, tmp_path / "sampled", "embedded", spec=spec, options=OPTIONS,
                     verbose=False)  # fmt: skip
    assert (cache.num_views, cache.manifest["key"]["augmentation"]["view_seed"]) == (3, 11)
    seen: dict[int, set] = {}
    for epoch in range(4):
        ds = data.make_dataset("embedded", "train", global_batch_size=50, training=True,
                               seed=epoch, choose_view=cache.views.choose, **OPTIONS)  # fmt: skip
        for x, y, index, view in ds:
            images, labels, logits = unpack(cache.attach_logits(x, y, index, view))
            expected = teacher(images, training=False).numpy()
            np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
            for i, v, image in zip(index.numpy(), view.numpy(), x.numpy()):
                seen.setdefault(int(i), set()).add((int(v), image.tobytes()))
    # Each image only ever shows its 3 stored views, each always rendered the same way.
    for shown in seen.values():
        assert len({v for v, _ in shown}) <= 3 and len(shown) == len({v for v, _ in shown})
    assert max(len(shown) for shown in seen.values()) == 3


def test_sampled_imagenet_cache_with_topk(tmp_path):
    """Random-resized crops from JPEG bytes: K stored views, top-k logits replayed."""
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((224, 224, 3)), keras.layers.AveragePooling2D(8),
                                keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
                                keras.layers.Dense(1000)])  # fmt: skip
    spec = tc.CacheSpec("sampled", views=2, topk=5, dtype="float32")
    with tfds.testing.mock_data(num_examples=6):
        cache = tc.build(teacher, tmp_path / "imagenet", "imagenet2012", spec=spec, verbose=False)
        assert (cache.num_examples, cache.num_views) == (6, 2)
        for batch in cache.train_fn(batch_size=3, seed=0)(0):
            x, _, logits = unpack(batch)
            expected = teacher(x, training=False).numpy()
            top = np.argsort(-expected, -1)[:, :5]
            logits = logits.numpy()
            np.testing.assert_array_equal(np.argsort(-logits, -1)[:, :5], top)
            kept, fresh = np.take_along_axis(logits, top, -1), np.take_along_axis(expected, top, -1)
            np.testing.assert_allclose(kept, fresh, rtol=1e-5)


def test_seeded_augmentations_replay_exactly_for_continuous_recipes():
    """Sampled caches rely on this: a seed pins a random-resized crop completely."""
    with tfds.testing.mock_data(num_examples=2):
        source = data.get_source("imagenet2012")
        options = source.resolve_options({})
        image, _ = next(iter(source.examples("train", None, False, options)))
    seed, other = tf.constant([4, 2], tf.int64), tf.constant([4, 3], tf.int64)
    first = source.train_image(image, seed, options).numpy()
    np.testing.assert_array_equal(first, source.train_image(image, seed, options))
    assert not np.array_equal(first, source.train_image(image, other, options))


def test_topk_keeps_the_top_probabilities_and_the_rest_mass():
    logits = np.array([[2.0, -1.0, 0.5, 3.0, 0.0]], np.float32)
    values, indices, rest = tc.compress_topk(logits, 2)
    np.testing.assert_array_equal(indices, [[3, 0]])
    np.testing.assert_allclose(values, [[3.0, 2.0]])
    # rest = log(mean(exp(-1), exp(0.5), exp(0))), by hand
    np.testing.assert_allclose(rest, [np.log((np.exp(-1) + np.exp(0.5) + 1) / 3)], rtol=1e-6)
    full = tc.expand_topk(values, indices, rest, 5)
    p, q = tf.nn.softmax(logits).numpy(), tf.nn.softmax(full).numpy()
    np.testing.assert_allclose(q[0, [3, 0]], p[0, [3, 0]], rtol=1e-6)
    np.testing.assert_allclose(q[0, [1, 2, 4]].sum(), p[0, [1, 2, 4]].sum(), rtol=1e-6)
    np.testing.assert_allclose(q[0, [1, 2, 4]], q[0, 1])  # the rest is flattened


def test_a_cache_for_something_else_is_rejected(exact_cache, teacher, tmp_path):
    spec = tc.CacheSpec("exact", dtype="float32")
    directory = exact_cache.directory
    with pytest.raises(tc.StaleCacheError, match="teacher_weights_sha256"):
        tc.TeacherCache.open(directory, make_teacher(1), "embedded", spec=spec, options=OPTIONS)
    with pytest.raises(tc.StaleCacheError, match="storage"):
        tc.build(teacher, directory, "embedded", spec=tc.CacheSpec("exact", dtype="float16"),
                 options=OPTIONS)  # fmt: skip
    with pytest.raises(tc.StaleCacheError, match="augmentation"):
        tc.TeacherCache.open(directory, teacher, "embedded", options=OPTIONS,
                             spec=tc.CacheSpec("sampled", views=4, dtype="float32"))  # fmt: skip
    with pytest.raises(tc.StaleCacheError, match="data"):
        tc.TeacherCache.open(directory, teacher, "embedded", spec=spec,
                             options={**OPTIONS, "data_seed": 1})  # fmt: skip
    # Nothing was touched: the cache still opens.
    tc.TeacherCache.open(directory, teacher, "embedded", spec=spec, options=OPTIONS)

    # Same key, other contents (e.g. weights changed without the manifest knowing).
    corrupt = tmp_path / "corrupt"
    shutil.copytree(directory, corrupt)
    logits = np.load(corrupt / "logits.npy", mmap_mode="r+")
    logits[:64] += 1.0
    logits.flush()
    with pytest.raises(tc.StaleCacheError, match="disagrees with the teacher"):
        tc.TeacherCache.open(corrupt, teacher, "embedded", spec=spec, options=OPTIONS)

    cache = tc.TeacherCache.open(directory, teacher, "embedded", spec=spec, options=OPTIONS)
    with pytest.raises(tc.StaleCacheError, match="does not match the data"):
        cache._lookup(np.array([0, 1]), np.array([0, 0]), np.array([5, 5], np.int32))

    with pytest.raises(ValueError, match="continuous augmentation"):
        tc.check_dataset(tc.CacheSpec("exact"), "imagenet2012")


def test_interrupted_build_resumes_to_the_same_cache(exact_cache, teacher, tmp_path, monkeypatch):
    spec = tc.CacheSpec("exact", dtype="float32")
    directory = tmp_path / "partial"
    kwargs = dict(spec=spec, options=OPTIONS, verbose=False, flush_every=16, batch_size=200)
    assert tc.build(teacher, directory, "embedded", max_images=40, **kwargs) is None
    assert json.loads((directory / "progress.json").read_text()) == {"images_done": 40}
    with pytest.raises(tc.StaleCacheError, match="incomplete"):
        tc.TeacherCache.open(directory, teacher, "embedded", spec=spec, options=OPTIONS)

    # A kill during the next chunk loses only that chunk.
    real_flush, calls = cache_module._flush, []

    def killed_on_second_write(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")
        return real_flush(*args)

    monkeypatch.setattr(cache_module, "_flush", killed_on_second_write)
    with pytest.raises(KeyboardInterrupt):
        tc.build(teacher, directory, "embedded", **kwargs)
    assert json.loads((directory / "progress.json").read_text()) == {"images_done": 56}
    assert not (directory / "claim.json").exists()  # released
    monkeypatch.setattr(cache_module, "_flush", real_flush)

    resumed = tc.build(teacher, directory, "embedded", **kwargs)
    index = np.arange(NUM_TRAIN).repeat(162)
    view = np.tile(np.arange(162), NUM_TRAIN)
    np.testing.assert_allclose(
        resumed.logits(index, view), exact_cache.logits(index, view), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(resumed.labels, exact_cache.labels)


def test_cached_distillation_under_mirrored_strategy(exact_cache, mirrored_strategy, tmp_path):
    """Two replicas split (images, labels, teacher_logits) batches like online KD."""
    histories = {}
    for kind in ("online", "cached"):
        with mirrored_strategy.scope():
            teacher = make_teacher(0)  # the cache's teacher, built under the strategy
            student = build_tiny_cnn(100, (32, 32, 3), name="s", seed=7, synchronized=True)
        train = (lambda epoch: online_epoch(32, 3, epoch)) if kind == "online" else None
        train = train or exact_cache.train_fn(batch_size=32, seed=3)
        config = lskd_tf.TrainConfig(epochs=1, batch_size=32, seed=3, verbose=0)
        histories[kind] = lskd_tf.distill_student(
            teacher,
            student,
            train,
            run_dir=tmp_path / kind,
            config=config,
            distill=lskd_tf.DistillSpec(temperature=2.0),
        ).history[0]
    for key in ("loss", "kd_loss", "agreement"):
        assert histories["cached"][key] == pytest.approx(histories["online"][key], rel=1e-5)

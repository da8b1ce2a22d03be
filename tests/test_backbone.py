"""Backbone: channels, grid, frozen state, weights (real, missing, from a file), pixels."""

from __future__ import annotations

import time

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from helpers import build_classifier

from adtr_core.method import backbone as bb
from adtr_core.method import weights as weights_mod
from adtr_core.method.backbone import SUPPORTED_NAMES, BackboneConfig, build_backbone, normalisation
from adtr_core.method.weights import BackboneWeightsError

SIZE = 64  # 4x4 grid: tiny but every stage (stride 2..32) is at least 2x2

EXPECTED_STAGE_CHANNELS = {
    "efficientnet_b4": [24, 32, 56, 160, 448],  # the paper: 720
    "efficientnet_b0": [16, 24, 40, 112, 320],
    "resnet18": [64, 64, 128, 256, 512],
    "resnet34": [64, 64, 128, 256, 512],
    "tf_efficientnet_lite0": [16, 24, 40, 112, 320],
    "tf_efficientnet_lite1": [16, 24, 40, 112, 320],
    "tf_efficientnet_lite2": [16, 24, 48, 120, 352],
    "pixels": [768],
}
CAT_CLASSES = set(range(281, 286))  # ImageNet tabby .. Egyptian cat


def _images(n: int = 2, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


@pytest.mark.parametrize("name", SUPPORTED_NAMES)
def test_channels_grid_and_finite(name: str) -> None:
    b = build_backbone(BackboneConfig(name=name, weights="random", image_size=SIZE))
    assert b.stage_channels == EXPECTED_STAGE_CHANNELS[name]
    assert b.channels == sum(EXPECTED_STAGE_CHANNELS[name])
    assert b.grid == (SIZE // 16, SIZE // 16)
    assert b.stride == 16
    f = b(_images())
    assert f.shape == (2, b.channels, *b.grid)
    assert f.dtype == torch.float32
    assert torch.isfinite(f).all()
    assert f.std() > 0


def test_paper_backbone_is_720_channels_at_256() -> None:
    b = build_backbone(BackboneConfig(name="efficientnet_b4", weights="random", image_size=256))
    assert (b.channels, b.grid, b.stage_strides) == (720, (16, 16), [2, 4, 8, 16, 32])


@pytest.mark.parametrize("name", ["efficientnet_b0", "resnet18"])
def test_frozen_and_eval_after_train(name: str) -> None:
    b = build_backbone(BackboneConfig(name=name, weights="random", image_size=SIZE))
    b.train()
    assert not b.training and not any(m.training for m in b.modules())
    assert not any(p.requires_grad for p in b.parameters())
    x = _images()
    f1, f2 = b(x), b(x)
    assert torch.equal(f1, f2)  # batch-norm statistics are not updated
    assert not f1.requires_grad


def test_stage_subsets() -> None:
    last = build_backbone(BackboneConfig(name="efficientnet_b0", stages=(5,), weights="random"))
    assert last.stage_channels == [320] and last.stage_strides == [32]
    mid = build_backbone(
        BackboneConfig(name="resnet18", stages=(2, 4), weights="random", image_size=SIZE)
    )
    assert mid.channels == 64 + 256 and mid.stage_strides == [4, 16]
    assert mid(_images()).shape == (2, 320, 4, 4)
    # the stride-16 stage is passed through unchanged, finer ones are average pooled
    full = build_backbone(
        BackboneConfig(name="resnet18", stages=(4,), weights="random", image_size=SIZE)
    )
    raw = full.features(full.normalise(_images()))[0]
    assert torch.allclose(full(_images()), raw)


@pytest.mark.parametrize(
    "kwargs",
    [dict(name="vgg16"), dict(stages=()), dict(stages=(0, 1)), dict(stages=(3, 2))]
    + [dict(image_size=100)],
)
def test_bad_config(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BackboneConfig(**kwargs)


def test_wrong_input_size_is_a_clear_error() -> None:
    b = build_backbone(BackboneConfig(name="resnet18", weights="random", image_size=SIZE))
    with pytest.raises(ValueError, match="image_size"):
        b(_images(size=128))


def test_cache_key_names_what_the_features_depend_on() -> None:
    def key(**kw) -> str:
        cfg = dict(name="resnet18", weights="random", image_size=SIZE)
        return build_backbone(BackboneConfig(**{**cfg, **kw})).cache_key()

    base = key()
    assert "resnet18" in base and "random" in base
    assert len({base, key(stages=(4, 5)), key(image_size=128), key(name="resnet34")}) == 4
    lite = build_backbone(BackboneConfig(name="tf_efficientnet_lite0", image_size=SIZE))
    assert "efficientnet-lite0" in lite.cache_key()


def test_random_init_is_deterministic() -> None:
    torch.manual_seed(1)
    a = build_backbone(BackboneConfig(name="resnet18", weights="random", image_size=SIZE))
    torch.manual_seed(2)
    b = build_backbone(BackboneConfig(name="resnet18", weights="random", image_size=SIZE))
    x = _images()
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize(
    "name,count",
    [
        ("tf_efficientnet_lite0", 296),
        ("tf_efficientnet_lite1", 386),
        ("tf_efficientnet_lite2", 386),
    ],
)
def test_lite_state_dict_maps_by_position(name: str, count: int) -> None:
    state = weights_mod.lite_state_dict(name)
    assert len(state) == count
    assert weights_mod.lite_state_dict(name) is state  # cached in-process
    with torch.device("meta"):
        ref = timm.create_model(name).state_dict()
    assert list(state) == list(ref)
    assert all(state[k].shape == ref[k].shape for k in ref)
    assert normalisation(name) == ((0.5,) * 3, (0.5,) * 3)


def _top5(model: torch.nn.Module, name: str, weights: str) -> set[int]:
    from skimage import data

    image = torch.from_numpy(np.ascontiguousarray(data.chelsea())).permute(2, 0, 1).float() / 255
    x = F.interpolate(image[None], size=224, mode="bilinear", antialias=True)  # (1, 3, 224, 224)
    mean, std = normalisation(name, weights)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model(x)  # (1, 1000)
    return set(logits.topk(5).indices[0].tolist())


@pytest.mark.parametrize(
    "name", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
)
def test_lite_weights_are_real_imagenet_weights(name: str) -> None:
    assert _top5(build_classifier(name, "auto"), name, "auto") & CAT_CLASSES


def test_random_init_does_not_see_the_cat() -> None:
    name = "tf_efficientnet_lite0"
    assert not _top5(build_classifier(name, "random"), name, "random") & CAT_CLASSES


def test_lite_backbone_uses_the_loaded_weights() -> None:
    b = build_backbone(BackboneConfig(name="tf_efficientnet_lite0", image_size=SIZE))
    state = weights_mod.lite_state_dict("tf_efficientnet_lite0")
    for key, value in b.features.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_missing_weights_fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        weights_mod, "_timm_cached_file", lambda name: None
    )  # as on a fresh machine
    start = time.perf_counter()
    with pytest.raises(BackboneWeightsError, match="--backbone-weights") as err:
        build_backbone(BackboneConfig(name="efficientnet_b4", weights="auto"))
    assert time.perf_counter() - start < 10
    assert "efficientnet_b4" in str(err.value) and "weights='timm'" in str(err.value)


@pytest.mark.parametrize("offline", [True, False])
def test_timm_download_fails_fast_offline(monkeypatch: pytest.MonkeyPatch, offline: bool) -> None:
    monkeypatch.setattr(weights_mod, "_timm_cached_file", lambda name: None)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:  # an endpoint that can never resolve (RFC 6761): the connectivity probe must fail
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "https://adtr-test.invalid")
    start = time.perf_counter()
    with pytest.raises(BackboneWeightsError, match="--backbone-weights"):
        build_backbone(BackboneConfig(name="resnet18", weights="timm"))
    assert time.perf_counter() - start < 10


def test_checkpoint_path_round_trip(tmp_path) -> None:
    torch.manual_seed(123)  # other weights than the seeded random init
    source = timm.create_model("resnet18", pretrained=False, num_classes=10)  # other head
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "resnet18_custom.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)

    b = build_backbone(BackboneConfig(name="resnet18", weights=str(path), image_size=SIZE))
    for key, value in b.features.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key
    assert "resnet18_custom.pth" in b.cache_key()
    rand = build_backbone(BackboneConfig(name="resnet18", weights="random", image_size=SIZE))
    assert not torch.allclose(b(_images()), rand(_images()))


def test_auto_uses_timm_weights_from_the_local_cache(monkeypatch, tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(7)
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "model.safetensors"  # the file name timm's HF cache uses
    save_file(source.state_dict(), str(path))
    monkeypatch.setattr(weights_mod, "_timm_cached_file", lambda name: path)
    b = build_backbone(BackboneConfig(name="resnet18", weights="auto", image_size=SIZE))
    for key, value in b.features.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key
    assert "timm:model.safetensors" in b.cache_key()
    assert normalisation("resnet18", "auto") == (bb.IMAGENET_MEAN, bb.IMAGENET_STD)


def test_checkpoint_without_head_loads_with_a_warning(tmp_path) -> None:
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    path = tmp_path / "resnet18_nohead.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, path)
    with pytest.warns(UserWarning, match="head is random"):
        build_classifier("resnet18", str(path))
    assert build_backbone(BackboneConfig(name="resnet18", weights=str(path), image_size=SIZE))


def test_checkpoint_of_another_architecture_is_rejected(tmp_path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), path)
    with pytest.raises(BackboneWeightsError, match="does not fit"):
        build_backbone(BackboneConfig(name="resnet18", weights=str(path), image_size=SIZE))
    with pytest.raises(BackboneWeightsError, match="does not exist"):
        build_backbone(BackboneConfig(name="resnet18", weights=str(tmp_path / "nope.pth")))


def test_pixels_backbone_is_patchify() -> None:
    b = build_backbone(BackboneConfig(name="pixels", image_size=SIZE))
    x = _images()
    tokens = b(x)  # (2, 768, 4, 4)
    assert tokens.shape == (2, 768, 4, 4)
    assert torch.allclose(b.unpatchify(tokens), x, atol=1e-6)  # exact inverse
    # token (i, j), channel c*256 + y*16 + x = normalised pixel (c, 16i + y, 16j + x)
    norm = b.normalise(x)
    c, y, xx, i, j = 2, 5, 11, 1, 3
    assert torch.equal(tokens[:, c * 256 + y * 16 + xx, i, j], norm[:, c, 16 * i + y, 16 * j + xx])

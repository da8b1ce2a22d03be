"""The experiment layer: one config → data, features, training, evaluation, a results folder.

This is the only place where the stages meet (STYLE.md, rule 2): ``data`` gives
images, ``backbone`` turns them into features (computed once and cached by
``features``), a reconstruction model from ``model`` / ``baselines`` is trained by
the one ``train.Trainer`` with a loss from ``losses``, and ``scoring`` plus
``metrics`` evaluate it.

A results folder is named after its config and holds::

    config.json        the resolved ExperimentConfig
    checkpoint.pt      model + optimiser state, loadable with weights_only=True
    history.csv        one row per epoch (loss, lr, time, periodic metrics)
    metrics.json       image_auroc, pixel_auroc, pixel_aupro (+ category, counts)
    scores.csv         per test image: path, defect, label, image score
    score_maps.npz     per test image score maps (float16), when the data has masks

Re-running the same config resumes from ``checkpoint.pt``; a finished run is
re-evaluated from its checkpoint without training again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from adtr_core import paths
from adtr_core.backbone import BackboneConfig, build_backbone
from adtr_core.baselines import build_reconstructor
from adtr_core.data import open_dataset
from adtr_core.data.confetti import ConfettiDataset
from adtr_core.features import FeatureSet, extract_features
from adtr_core.io import atomic_path, read_json, write_json
from adtr_core.losses import l_img, l_norm, l_px, mask_to_grid
from adtr_core.metrics import compute_metrics
from adtr_core.scoring import ScoringConfig, score
from adtr_core.train import TrainConfig, Trainer, load_checkpoint, resolve_device

MODELS = ("adtr", "adtr_no_attention", "adtr_no_query", "cnn", "padim", "patchcore")
PEER_MODELS = ("padim", "patchcore")  # anomalib's peers, fitted by adtr_core.peers (no training)
LOSSES = ("norm", "px", "img")
ONE_CLASS_SOURCES = ("cifar10", "cifar100", "digits")


@dataclass
class ExperimentConfig:
    """Everything one run depends on. Defaults are the paper's settings (METHOD.md §4)."""

    # --- data ---
    data: str = "demo"  # demo | mvtec | folder | cifar10 | digits
    data_root: str | None = None  # None: the embedded demo data, or MVTEC_ROOT / CIFAR_ROOT
    category: str | None = None  # MVTec category, or the normal class for one-class data
    image_size: int = 256  # the paper: 256 (MVTec, 16x16 grid); one-class data is upsampled
    # --- backbone ---
    backbone: str = "tf_efficientnet_lite0"  # the paper: efficientnet_b4 (weights not offline)
    stages: tuple[int, ...] = (1, 2, 3, 4, 5)  # multi-scale; (5,) is the last-layer ablation
    backbone_weights: str = "auto"  # auto | random | timm | path to a state dict
    # --- reconstruction model ---
    model: str = "adtr"  # adtr | adtr_no_attention | adtr_no_query | cnn | padim | patchcore
    hidden_dim: int = 256
    num_encoder_layers: int = 4
    num_decoder_layers: int = 4
    num_heads: int = 8
    dim_feedforward: int = 1024
    dropout: float = 0.1
    # --- training ---
    epochs: int = 500
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    lr_milestones: tuple[int, ...] = (400,)
    lr_gamma: float = 0.1
    grad_clip: float | None = 0.1
    seed: int = 0
    device: str = "auto"
    eval_every: int = 0  # epochs between evaluations on the test set (0: only at the end)
    # --- anomaly-available case (ADTR+, Sec. 3.3) ---
    loss: str = "norm"  # norm (eq. 1) | px (eqs. 6-7) | img (eqs. 8-9)
    anomalies: str | None = None  # confetti | cifar100: the anomalies shown in training
    num_anomalies: int | None = None  # None: as many as normal training images
    alpha: float = 0.003
    topk: int = 20
    init_from: str | None = None  # results folder or checkpoint of the normal-only model
    # Our choice (the paper is silent): start the output projection's bias at the mean
    # training feature, so training does not spend its first steps learning the mean.
    init_output_bias: bool = True
    # --- scoring ---
    score_mode: str | None = None  # None: max_avgpool (MVTec-style) or mean (one-class data)
    pool_size: int = 16
    sigma: float = 4.0

    def __post_init__(self) -> None:
        self.stages = tuple(int(s) for s in self.stages)
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose one of {', '.join(MODELS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}: choose one of {', '.join(LOSSES)}")
        if self.loss != "norm" and self.anomalies is None:
            self.anomalies = "cifar100" if self.data == "cifar10" else "confetti"
        if self.score_mode is None:
            self.score_mode = "mean" if self.data in ONE_CLASS_SOURCES else "max_avgpool"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Build a config from plain values, rejecting unknown keys with the list of valid ones."""
        cls.check_fields(values)
        return cls(**values)

    @classmethod
    def check_fields(cls, names, what: str = "experiment parameter(s)") -> None:
        """Raise ValueError naming every unknown field in ``names`` and listing the valid ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(names) - known)
        if unknown:
            raise ValueError(
                f"unknown {what} {', '.join(unknown)}; valid fields: {', '.join(sorted(known))}"
            )

    def train_config(self, device: str | torch.device = "cpu", **overrides: Any) -> TrainConfig:
        """The trainer settings of this experiment (``overrides`` replace any of them)."""
        values = dict(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            lr_milestones=self.lr_milestones,
            lr_gamma=self.lr_gamma,
            grad_clip=self.grad_clip,
            seed=self.seed,
            device=str(device),
            eval_every=self.eval_every,
        )
        values.update(overrides)
        return TrainConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def run_name(self) -> str:
        """A folder name that says what the run is and hashes the rest of the config."""
        values = self.to_dict()
        if values["init_from"] is not None:
            # The starting run's folder name already hashes its config; where the runs live
            # must not change the name of the runs started from it.
            start = Path(values["init_from"])
            values["init_from"] = start.parent.name if start.suffix == ".pt" else start.name
        digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
        parts = [self.data, str(self.category), self.model, self.backbone]
        if self.loss != "norm":
            parts.append(f"{self.loss}-{self.anomalies}")
        return "-".join(parts).replace("/", "_") + f"-{digest[:8]}"


@dataclass
class RunResult:
    """What a run produced; everything here is also on disk in ``out_dir``."""

    out_dir: Path
    config: ExperimentConfig
    metrics: dict[str, float]
    history: pd.DataFrame
    scores: pd.DataFrame
    score_maps: np.ndarray | None = None  # (N, S, S) float16, when the data has masks
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- data


def resolve_category(cfg: ExperimentConfig) -> str:
    """The category to run: the configured one, or the first of the data set."""
    if cfg.category is not None:
        return str(cfg.category)
    if cfg.data in ONE_CLASS_SOURCES:
        return "0"
    if cfg.data == "demo":
        from adtr_core.data.demo import DEMO_CATEGORIES

        return DEMO_CATEGORIES[0]
    root = _data_root(cfg)
    found = sorted(p.name for p in Path(root).iterdir() if (p / "train").is_dir()) if root else []
    if not found:
        raise ValueError(f"no category folders with a train/ folder under {root}: pass --category")
    return found[0]


def _data_root(cfg: ExperimentConfig) -> str | None:
    if cfg.data_root is not None:
        return cfg.data_root
    if cfg.data == "mvtec" and paths.mvtec_root() is not None:
        return str(paths.mvtec_root())
    if cfg.data in ("cifar10", "cifar100") and paths.cifar_root() is not None:
        return str(paths.cifar_root())
    return None


def open_split(cfg: ExperimentConfig, split: str):
    """The train or test dataset of ``cfg`` (items: image, mask, label, defect, path)."""
    return open_dataset(
        cfg.data,
        root=_data_root(cfg),
        category=resolve_category(cfg),
        split=split,
        image_size=cfg.image_size,
    )


def anomaly_dataset(cfg: ExperimentConfig, train_ds):
    """The anomalies shown to ADTR+ in training: confetti on normal images, or CIFAR-100."""
    if cfg.anomalies == "confetti":
        return ConfettiDataset(train_ds, seed=cfg.seed + 1)
    if cfg.anomalies == "cifar100":
        return open_dataset(
            "cifar100",
            root=_data_root(cfg),
            category=None,
            split="outlier",
            image_size=cfg.image_size,
        )
    raise ValueError(f"unknown anomalies {cfg.anomalies!r}: choose confetti or cifar100")


# --------------------------------------------------------------------------- models


def build_feature_extractor(cfg: ExperimentConfig) -> nn.Module:
    return build_backbone(
        BackboneConfig(
            name=cfg.backbone,
            stages=cfg.stages,
            weights=cfg.backbone_weights,
            image_size=cfg.image_size,
        )
    )


def build_model(cfg: ExperimentConfig, in_channels: int, grid: tuple[int, int]) -> nn.Module:
    """The reconstruction network named by ``cfg.model`` over ``in_channels`` x ``grid`` features."""
    return build_reconstructor(
        cfg.model,
        in_channels=in_channels,
        grid=grid,
        hidden_dim=cfg.hidden_dim,
        num_encoder_layers=cfg.num_encoder_layers,
        num_decoder_layers=cfg.num_decoder_layers,
        num_heads=cfg.num_heads,
        dim_feedforward=cfg.dim_feedforward,
        dropout=cfg.dropout,
    )


def _checkpoint_file(path: str | Path) -> Path:
    path = Path(path)
    return path / "checkpoint.pt" if path.is_dir() else path


def load_run_model(checkpoint: str | Path, device: str = "cpu"):
    """Rebuild the model of a finished run from its checkpoint.

    Returns:
        ``(cfg, backbone, model)`` with the model's weights loaded, both in eval mode.
    """
    ckpt_path = _checkpoint_file(checkpoint)
    if not ckpt_path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {ckpt_path}: pass a results folder written by `adtr train` "
            "or its checkpoint.pt"
        )
    state = load_checkpoint(ckpt_path, map_location=device)
    cfg = ExperimentConfig.from_dict(state["extra"]["config"])
    backbone = build_feature_extractor(cfg).to(device)
    model = build_model(cfg, backbone.channels, backbone.grid).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return cfg, backbone, model


# --------------------------------------------------------------------------- training


def _features_dataset(*sets: FeatureSet, labels: list[int]):
    """A dataset of dicts {features, mask (h, w), label} over one or more feature sets.

    Pixel masks are brought to the feature grid as L_px expects them (``mask_to_grid``:
    a cell is anomalous when any of its pixels is).
    """
    feats = torch.cat([s.features for s in sets])  # (N, C, h, w)
    grid = tuple(feats.shape[-2:])
    masks = [
        mask_to_grid(s.masks, grid) if s.masks is not None else torch.zeros(len(s), *grid)
        for s in sets
    ]
    mask = torch.cat(masks)  # (N, h, w)
    lab = torch.cat([torch.full((len(s),), y, dtype=torch.long) for s, y in zip(sets, labels)])
    return _DictDataset(features=feats, mask=mask, label=lab)


class _DictDataset(torch.utils.data.Dataset):
    """Rows of equally long tensors, served as dicts."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        self.tensors = tensors
        self.length = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        return {k: v[idx] for k, v in self.tensors.items()}


def make_loss_fn(cfg: ExperimentConfig):
    """``loss_fn(model, batch)`` for the Trainer: L_norm, L_px or L_img (METHOD.md §3)."""

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        f = batch["features"]  # (B, C, h, w)
        f_hat = model(f)  # (B, C, h, w)
        if cfg.loss == "norm":
            return l_norm(f, f_hat)
        if cfg.loss == "px":
            return l_px(f, f_hat, batch["mask"], alpha=cfg.alpha)
        return l_img(f, f_hat, batch["label"], alpha=cfg.alpha, k=cfg.topk)

    return loss_fn


@torch.no_grad()
def predict_features(
    model: nn.Module, features: torch.Tensor, scoring: ScoringConfig, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score maps and image scores of precomputed features.

    Args:
        features: (N, C, h, w) backbone features.

    Returns:
        maps (N, S, S) float32 on the CPU, scores (N,).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    maps, scores = [], []
    for start in range(0, len(features), batch_size):
        f = features[start : start + batch_size].to(device)  # (B, C, h, w)
        m, s = score(f, model(f), scoring)
        maps.append(m.float().cpu())
        scores.append(s.float().cpu())
    model.train(was_training)
    return torch.cat(maps), torch.cat(scores)


def scoring_config(cfg: ExperimentConfig) -> ScoringConfig:
    return ScoringConfig(
        image_size=cfg.image_size, sigma=cfg.sigma, mode=cfg.score_mode, pool_size=cfg.pool_size
    )


def evaluate_features(model: nn.Module, test: FeatureSet, scoring: ScoringConfig):
    """Metrics, a per-image score table and the score maps of ``model`` on ``test``."""
    maps, scores = predict_features(model, test.features, scoring)
    labels = test.labels.numpy()
    masks = test.masks.numpy()[:, 0] if test.masks is not None else None
    metrics = compute_metrics(
        labels, scores.numpy(), masks=masks, maps=maps.numpy() if masks is not None else None
    )
    table = pd.DataFrame(
        {"path": test.paths, "defect": test.defects, "label": labels, "score": scores.numpy()}
    )
    return metrics, table, (maps.numpy().astype(np.float16) if masks is not None else None)


def init_output_bias(model: nn.Module, features: torch.Tensor) -> None:
    """Set the bias of ``model.output_proj`` to the mean training feature (per channel).

    Args:
        features: (N, C, h, w) training features.
    """
    proj = getattr(model, "output_proj", None)
    if proj is None or getattr(proj, "bias", None) is None:
        return
    with torch.no_grad():
        proj.bias.copy_(features.mean(dim=(0, 2, 3)).to(proj.bias))  # (C,)


def _init_from(model: nn.Module, source: str, device: torch.device) -> None:
    state = load_checkpoint(_checkpoint_file(source), map_location=device)
    model.load_state_dict(state["model"])


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> RunResult:
    """Train (or resume) and evaluate one configuration; write its results folder.

    Args:
        cfg: the experiment.
        out_dir: the results folder; default ``runs/<cfg.run_name()>``.
        progress: show tqdm progress bars.

    Returns:
        The metrics, history, per-image scores and score maps; also written to ``out_dir``.
    """
    if cfg.model in PEER_MODELS:  # PaDiM / PatchCore: fitted, not trained
        from adtr_core.peers import run_peer

        return run_peer(cfg, out_dir=out_dir, progress=progress)
    start = time.perf_counter()
    category = resolve_category(cfg)
    cfg = dataclasses.replace(cfg, category=category)
    out = Path(out_dir) if out_dir is not None else paths.runs_dir() / cfg.run_name()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", cfg.to_dict())

    device = resolve_device(cfg.device)
    backbone = build_feature_extractor(cfg).to(device)
    train_ds, test_ds = open_split(cfg, "train"), open_split(cfg, "test")
    train_f = extract_features(backbone, train_ds, device=device, progress=progress)
    test_f = extract_features(backbone, test_ds, device=device, progress=progress)
    if cfg.loss == "norm":
        train_data = _features_dataset(train_f, labels=[0])
    else:
        anomalies = anomaly_dataset(cfg, train_ds)
        anom_f = extract_features(backbone, anomalies, device=device, progress=progress)
        n = cfg.num_anomalies or len(train_f)
        anom_f = anom_f.subset(list(range(min(n, len(anom_f)))))
        train_data = _features_dataset(train_f, anom_f, labels=[0, 1])

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, backbone.channels, backbone.grid).to(device)
    if cfg.init_from is not None:
        _init_from(model, cfg.init_from, device)
    elif cfg.init_output_bias:
        init_output_bias(model, train_f.features)
    scoring = scoring_config(cfg)

    def eval_fn(m: nn.Module) -> dict[str, float]:
        return evaluate_features(m, test_f, scoring)[0]

    train_sets = [train_f] if cfg.loss == "norm" else [train_f, anom_f]
    fingerprint = data_fingerprint(*train_sets)
    set_aside_stale_checkpoint(out / "checkpoint.pt", fingerprint)
    trainer = Trainer(
        model,
        make_loss_fn(cfg),
        train_data,
        cfg.train_config(device, progress=progress),
        eval_fn=eval_fn if cfg.eval_every else None,
        checkpoint_path=out / "checkpoint.pt",
        checkpoint_extra={"config": cfg.to_dict(), "train_data": fingerprint},
    )
    history = pd.DataFrame(trainer.fit())
    metrics, scores, maps = evaluate_features(model, test_f, scoring)
    metrics.update(
        category=category,
        num_train=len(train_f),
        num_test=len(test_f),
        num_test_anomalous=int(test_f.labels.sum()),
    )
    wall = time.perf_counter() - start
    metrics["wall_s"] = round(wall, 2)
    _write_results(out, metrics, history, scores, maps)
    return RunResult(out, cfg, metrics, history, scores, maps, wall_s=wall)


def data_fingerprint(*sets: FeatureSet) -> str:
    """A sha256 of the training features and labels: which data a checkpoint was trained on."""
    hasher = hashlib.sha256()
    for fs in sets:
        hasher.update(fs.features.numpy().tobytes())
        hasher.update(fs.labels.numpy().tobytes())
    return hasher.hexdigest()


def set_aside_stale_checkpoint(path: Path, fingerprint: str) -> Path | None:
    """Move ``path`` aside when it was trained on other data (e.g. a rebuilt demo set).

    The run's name hashes its config, not the files the data set holds; a checkpoint from
    other training data must not be resumed. It is renamed, not deleted, to
    ``checkpoint.stale-<its data fingerprint>.pt``. Checkpoints without a fingerprint
    (older runs) are resumed as before.

    Returns:
        the new path of the moved checkpoint, or None when nothing was moved.
    """
    if not path.exists():
        return None
    stored = (load_checkpoint(path).get("extra") or {}).get("train_data")
    if stored is None or stored == fingerprint:
        return None
    stale = path.with_name(f"{path.stem}.stale-{stored[:12]}{path.suffix}")
    path.replace(stale)
    warnings.warn(
        f"{path} was trained on other data than this run's (the data set changed since); it "
        f"was moved to {stale.name} and the run starts afresh",
        stacklevel=2,
    )
    return stale


def _write_results(out: Path, metrics, history: pd.DataFrame, scores: pd.DataFrame, maps) -> None:
    with atomic_path(out / "history.csv") as tmp:
        history.to_csv(tmp, index=False)
    with atomic_path(out / "scores.csv") as tmp:
        scores.to_csv(tmp, index=False)
    if maps is not None:
        with atomic_path(out / "score_maps.npz") as tmp:
            np.savez_compressed(tmp, maps=maps)
    write_json(out / "metrics.json", metrics)


def load_result(out_dir: str | Path) -> RunResult:
    """Read a results folder written by :func:`run_experiment`."""
    out = Path(out_dir)
    if not (out / "metrics.json").is_file():
        raise FileNotFoundError(f"{out} holds no finished run (metrics.json is missing)")
    maps_file = out / "score_maps.npz"
    return RunResult(
        out_dir=out,
        config=ExperimentConfig.from_dict(read_json(out / "config.json")),
        metrics=read_json(out / "metrics.json"),
        history=pd.read_csv(out / "history.csv"),
        scores=pd.read_csv(out / "scores.csv"),
        score_maps=np.load(maps_file)["maps"] if maps_file.is_file() else None,
        wall_s=float(read_json(out / "metrics.json").get("wall_s", 0.0)),
    )


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | None = None,
    category: str | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate a trained run on its test set (or on another root / category)."""
    dev = resolve_device(device)
    cfg, backbone, model = load_run_model(checkpoint, device=str(dev))
    overrides = {
        k: v for k, v in (("data_root", data_root), ("category", category)) if v is not None
    }
    cfg = dataclasses.replace(cfg, **overrides)
    test_f = extract_features(backbone, open_split(cfg, "test"), device=dev)
    metrics, _, _ = evaluate_features(model, test_f, scoring_config(cfg))
    metrics["category"] = resolve_category(cfg)
    return metrics


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _image_files(target: str | Path) -> list[Path]:
    target = Path(target)
    if target.is_file():
        return [target]
    if target.is_dir():
        files = sorted(p for p in target.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            return files
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {target}")
    raise FileNotFoundError(f"{target} is neither an image file nor a folder")


def _load_image(path: Path, size: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB").resize((size, size), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}; replace or remove the file") from err
    return torch.from_numpy(arr).permute(2, 0, 1)  # (3, S, S)


def predict_images(
    checkpoint: str | Path,
    inputs: str | Path,
    out_dir: str | Path,
    device: str = "auto",
    batch_size: int = 16,
    overlays: bool = True,
) -> pd.DataFrame:
    """Score new images with a trained run: ``scores.csv`` and one overlay PNG per image.

    Args:
        checkpoint: a results folder or its ``checkpoint.pt``.
        inputs: an image file or a folder of images (searched recursively).
        out_dir: where ``scores.csv`` and ``<name>_overlay.png`` files are written.

    Returns:
        The score table (path, score).
    """
    from adtr_core.plots.maps import save_overlay

    dev = resolve_device(device)
    cfg, backbone, model = load_run_model(checkpoint, device=str(dev))
    scoring = scoring_config(cfg)
    files = _image_files(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = torch.stack([_load_image(p, cfg.image_size) for p in chunk]).to(dev)  # (B,3,S,S)
        with torch.no_grad():
            f = backbone(images)  # (B, C, h, w)
            maps, scores = score(f, model(f), scoring)
        for path, img, m, s in zip(chunk, images.cpu(), maps.cpu(), scores.cpu()):
            rows.append({"path": str(path), "score": float(s)})
            if overlays:
                save_overlay(
                    img, m, out / f"{path.stem}_overlay.png", title=f"score {float(s):.3f}"
                )
    table = pd.DataFrame(rows)
    with atomic_path(out / "scores.csv") as tmp:
        table.to_csv(tmp, index=False)
    return table


def resolve_data_source(source: str, kind: str = "anomaly") -> tuple[str, str | None, str]:
    """Turn ``"auto"`` into a concrete data source, saying what was chosen and why.

    Args:
        source: ``"auto"`` or a concrete source (``demo``, ``mvtec``, ``cifar10``, ``digits``...).
        kind: ``"anomaly"`` (MVTec AD, else the demo textures) or ``"one_class"`` (CIFAR-10,
            else the digits).

    Returns:
        ``(source, root, note)``: the source, its root (None for embedded data) and one
        sentence for captions and logs.
    """
    if source != "auto":
        root = {"mvtec": paths.mvtec_root(), "cifar10": paths.cifar_root()}.get(source)
        return source, (str(root) if root else None), f"data: {source}"
    if kind == "anomaly":
        if paths.mvtec_root() is not None:
            return "mvtec", str(paths.mvtec_root()), f"data: MVTec AD at {paths.mvtec_root()}"
        return (
            "demo",
            None,
            ("data: the embedded demo textures (MVTec AD is not configured: set MVTEC_ROOT)"),
        )
    if kind == "one_class":
        if paths.cifar_root() is not None:
            return "cifar10", str(paths.cifar_root()), f"data: CIFAR-10 at {paths.cifar_root()}"
        return (
            "digits",
            None,
            ("data: scikit-learn's digits (CIFAR-10 is not configured: set CIFAR_ROOT)"),
        )
    raise ValueError(f"unknown data kind {kind!r}: choose anomaly or one_class")


def list_categories(source: str, root: str | None = None) -> list[str]:
    """The categories (or normal classes) of a data source, in a stable order."""
    if source == "demo":
        from adtr_core.data.demo import DEMO_CATEGORIES

        return list(DEMO_CATEGORIES)
    if source in ONE_CLASS_SOURCES:
        return [str(c) for c in range(10)]
    if root is None:
        raise ValueError(f"data source {source!r} needs a root folder (--data-root)")
    from adtr_core.data.mvtec import MVTEC_CATEGORIES

    present = sorted(p.name for p in Path(root).iterdir() if (p / "train").is_dir())
    official = [c for c in MVTEC_CATEGORIES if c in present]
    return official + [c for c in present if c not in official]

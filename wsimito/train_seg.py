"""Phase 1 training: the segmentation network on pixel-labelled images.

Pixel-wise softmax cross-entropy, Adam, learning rate decayed exponentially
from ``lr`` to ``lr_min`` over the run (the paper's schedule). Mitoses cover a
tiny share of the pixels, so a configurable share of crops is drawn around a
mitosis. Every epoch's randomness comes from ``(seed, epoch)``, so a run
resumed from its checkpoint gives the same model as one that never stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsimito.augment import dihedral, stain_jitter
from wsimito.config import Config, plain
from wsimito.datasets.splits import split_images
from wsimito.errors import WsimitoError
from wsimito.nets.inputs import to_tensor
from wsimito.outputs.atomic import atomic_path
from wsimito.segmentation import SegmentationModel, segment_array


@dataclass
class EpochReport:
    epoch: int  # 1-based
    epochs: int
    loss: float
    lr: float
    val_dice: float  # soft Dice of the probability map on held-out images (nan: none held out)
    val_pixel_f1: float  # F1 of pixels at probability 0.5
    seconds: float


class CropSampler:
    """Random square crops of the training images, a share of them around a mitosis, augmented."""

    def __init__(self, images: list[tuple[np.ndarray, np.ndarray]], crop: int, mitosis_fraction: float,
                 stain_sigma: float, brightness: float):
        self.images = [_pad_to(rgb, mask, crop) for rgb, mask in images]
        self.crop = crop
        self.mitosis_fraction = mitosis_fraction
        self.stain_sigma = stain_sigma
        self.brightness = brightness
        self.mitosis_pixels = [np.argwhere(mask > 0) for _, mask in self.images]
        self.with_mitoses = [i for i, px in enumerate(self.mitosis_pixels) if len(px)]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.with_mitoses and rng.random() < self.mitosis_fraction:
            index = self.with_mitoses[rng.integers(len(self.with_mitoses))]
            cy, cx = self.mitosis_pixels[index][rng.integers(len(self.mitosis_pixels[index]))]
            rgb, mask = self.images[index]
            # the mitosis pixel lands anywhere in the crop's central half
            y = int(np.clip(cy - rng.integers(self.crop // 4, 3 * self.crop // 4 + 1), 0, mask.shape[0] - self.crop))
            x = int(np.clip(cx - rng.integers(self.crop // 4, 3 * self.crop // 4 + 1), 0, mask.shape[1] - self.crop))
        else:
            rgb, mask = self.images[rng.integers(len(self.images))]
            y = int(rng.integers(mask.shape[0] - self.crop + 1))
            x = int(rng.integers(mask.shape[1] - self.crop + 1))
        window = (slice(y, y + self.crop), slice(x, x + self.crop))
        image, label = dihedral(rgb[window], mask[window], rng)
        return stain_jitter(image, rng, self.stain_sigma, self.brightness), label


def train_segmentation(images, config: Config, out: Path, seed: int = 0, device: str = "cpu",
                       resume: bool = False, on_step=None, on_epoch=None, val_images=None) -> SegmentationModel:
    """Train on ``images`` (list of (RGB, mask) at ``config.tiling.mpp``) and save the model to ``out``.

    Validation uses ``val_images`` when given (a split made by source slide,
    say), else a random ``train_seg.val_fraction`` of ``images``.

    A checkpoint ``<out>.ckpt`` is written after every epoch; ``resume=True``
    continues from it. ``on_step(done, total, loss)`` and ``on_epoch(EpochReport)``
    report progress; the returned model is the final epoch's.
    """
    schedule = config.train_seg
    if not images:
        raise WsimitoError("no training images")
    out = Path(out)
    checkpoint = out.with_name(out.name + ".ckpt")
    torch.manual_seed(seed)
    model = SegmentationModel.new(config.to_dict()["segmentation"], config.tiling.mpp)
    _start_from_prior(model.net, _MITOSIS_PIXEL_PRIOR)
    if schedule.crop % model.multiple:
        raise WsimitoError(f"train_seg.crop {schedule.crop} must be a multiple of {model.multiple} for this network")
    model.net.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.net.parameters(), lr=schedule.lr)
    if val_images is None:
        train_idx, val_idx = split_images(len(images), schedule.val_fraction, seed)
        val_images = [images[i] for i in val_idx]
        images = [images[i] for i in train_idx]
    history, first_epoch = [], 0
    if resume:
        first_epoch, history = _load_checkpoint(checkpoint, model, optimizer, device)
    sampler = CropSampler(images, schedule.crop, schedule.mitosis_crop_fraction,
                          schedule.stain_sigma, schedule.brightness)
    steps = max(1, schedule.crops_per_epoch // schedule.batch_size)
    for epoch in range(first_epoch, schedule.epochs):
        started = time.perf_counter()
        lr = _lr_at(epoch, schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rng = np.random.default_rng([seed, epoch])
        model.net.train()
        losses = []
        for step in range(steps):
            batch = [sampler.sample(rng) for _ in range(schedule.batch_size)]
            losses.append(_train_step(model, optimizer, batch, device))
            if on_step:
                on_step(epoch * steps + step + 1, schedule.epochs * steps, losses[-1])
        dice, f1 = validate(model, val_images, device)
        report = EpochReport(epoch + 1, schedule.epochs, float(np.mean(losses)), lr, dice, f1,
                             time.perf_counter() - started)
        history.append(vars(report))
        _save_checkpoint(checkpoint, model, optimizer, epoch + 1, history)
        if on_epoch:
            on_epoch(report)
    model.info = {
        "seed": seed,
        "epochs": schedule.epochs,
        "train_images": len(images),
        "val_images": len(val_images),
        "history": history,
        "config": config.to_dict(),
    }
    model.net.eval()
    model.save(out)
    return model


def fine_tune_on_fields(model: SegmentationModel, crops, fields, config: Config, out: Path, seed: int = 0,
                        device: str = "cpu", on_step=None, provenance: dict | None = None) -> SegmentationModel:
    """Continue training ``model`` for ``train_seg.field_steps`` steps, each batch cut from whole ``fields``
    (``field_share`` of it) and from the phase-1 ``crops``; save it to ``out`` and return it.

    Both are lists of (RGB, mask) at ``config.tiling.mpp``; a field's mask comes from its point labels
    (wsimito.point_masks), so everything dark that is not a labelled mitosis is background there. Crops
    centred on mitoses rarely show such look-alikes; on MITOS 2012 this stage raised the leave-one-slide-out
    recall of one R-CNN from 0.36 to 0.51 (model card, session 8). The model's ``info["fine_tune"]`` records
    the settings, the seed and ``provenance`` (what the fields were), so a rerun can tell a stale file.
    ``on_step(done, total, loss)`` reports progress.
    """
    schedule = config.train_seg
    from_fields = round(schedule.batch_size * schedule.field_share)
    if not fields or (from_fields < schedule.batch_size and not crops):
        raise WsimitoError("fine-tuning on fields needs fields, and crops unless train_seg.field_share is 1")
    if schedule.crop % model.multiple:
        raise WsimitoError(f"train_seg.crop {schedule.crop} must be a multiple of {model.multiple} for this network")
    crop_sampler = CropSampler(crops, schedule.crop, schedule.mitosis_crop_fraction, schedule.stain_sigma,
                               schedule.brightness) if crops else None
    field_sampler = CropSampler(fields, schedule.crop, schedule.field_mitosis_fraction, schedule.stain_sigma,
                                schedule.brightness)
    torch.manual_seed(seed)
    model.net.to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.net.parameters(), lr=schedule.field_lr)
    # a stream of its own: the epochs before drew theirs from (seed, 0 .. epochs - 1)
    rng = np.random.default_rng([seed, schedule.epochs])
    decay = schedule.lr_min / schedule.field_lr
    for step in range(schedule.field_steps):
        for group in optimizer.param_groups:
            group["lr"] = schedule.field_lr * decay ** (step / max(1, schedule.field_steps - 1))
        batch = ([crop_sampler.sample(rng) for _ in range(schedule.batch_size - from_fields)]
                 + [field_sampler.sample(rng) for _ in range(from_fields)])
        loss = _train_step(model, optimizer, batch, device)
        if on_step:
            on_step(step + 1, schedule.field_steps, loss)
    model.net.eval()
    model.info = {**model.info, "fine_tune": fine_tune_settings(config, seed, provenance) | {"fields": len(fields)}}
    model.save(out)
    return model


def fine_tune_settings(config: Config, seed: int, provenance: dict | None = None) -> dict:
    """What a field fine-tune depends on, as ``info["fine_tune"]`` records it (less the field count)."""
    schedule = config.train_seg
    return {"steps": schedule.field_steps, "share": schedule.field_share, "lr": schedule.field_lr,
            "lr_min": schedule.lr_min, "mitosis_fraction": schedule.field_mitosis_fraction, "seed": seed,
            **plain(provenance or {})}


def _train_step(model: SegmentationModel, optimizer, batch, device) -> float:
    """One Adam step of pixel-wise softmax cross-entropy on ``batch`` ((RGB, mask) pairs); bf16 on a GPU."""
    x = to_tensor(np.stack([b[0] for b in batch]), device)
    y = torch.from_numpy(np.stack([b[1] for b in batch]).astype(np.int64)).to(device)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda"):
        logits = model.net(x)
    loss = torch.nn.functional.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def validate(model: SegmentationModel, images, device="cpu") -> tuple[float, float]:
    """Soft Dice and pixel F1 (at 0.5) pooled over whole held-out images; nan without any."""
    if not images:
        return math.nan, math.nan
    inter = total = tp = fp = fn = 0.0
    for rgb, mask in images:
        prob = segment_array(model, rgb, tile=256 if model.multiple <= 256 else model.multiple,
                             halo=16, device=device)
        truth = mask > 0
        inter += float((prob * truth).sum())
        total += float(prob.sum() + truth.sum())
        hard = prob >= 0.5
        tp += float((hard & truth).sum())
        fp += float((hard & ~truth).sum())
        fn += float((~hard & truth).sum())
    dice = 2 * inter / total if total else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    return dice, f1


# Mitoses are about 1% of the pixels of a crop drawn around one, far less elsewhere.
_MITOSIS_PIXEL_PRIOR = 0.01


def _start_from_prior(net, prior: float) -> None:
    """Bias the final layer so the untrained net already predicts the rare class rarely.

    Otherwise the first hundreds of steps only learn that background dominates
    (as for the focal-loss detector of Lin et al. 2017).
    """
    with torch.no_grad():
        net.head.bias.zero_()
        net.head.bias[1] = math.log(prior / (1 - prior))


def _lr_at(epoch: int, schedule) -> float:
    if schedule.epochs <= 1:
        return schedule.lr
    return schedule.lr * (schedule.lr_min / schedule.lr) ** (epoch / (schedule.epochs - 1))


def _pad_to(rgb: np.ndarray, mask: np.ndarray, size: int):
    """Pad small images with white glass so a crop always fits."""
    height, width = mask.shape
    if height >= size and width >= size:
        return rgb, mask
    ph, pw = max(0, size - height), max(0, size - width)
    return (np.pad(rgb, ((0, ph), (0, pw), (0, 0)), constant_values=255), np.pad(mask, ((0, ph), (0, pw))))


def _save_checkpoint(path: Path, model, optimizer, epochs_done: int, history: list) -> None:
    state = {"model": model.state(), "optimizer": optimizer.state_dict(), "epochs_done": epochs_done,
             "history": plain(history)}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, model, optimizer, device) -> tuple[int, list]:
    if not path.exists():
        raise WsimitoError(f"{path}: no checkpoint to resume from")
    state = torch.load(path, map_location=device, weights_only=True)
    if state["model"]["spec"] != plain(model.spec):
        raise WsimitoError(f"{path}: checkpoint was trained with another network config; resume with the same one")
    model.net.load_state_dict(state["model"]["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epochs_done"]), list(state["history"])

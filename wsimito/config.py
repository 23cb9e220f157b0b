"""Typed configuration: dataclass defaults <- YAML file <- command-line overrides.

The defaults here are the single source of truth; ``configs/default.yaml``
spells them out for users to copy (a test keeps the two equal).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from wsimito.errors import SettingsError


def check_fraction(name: str, value: float) -> None:
    """Probabilities and calibrated scores live in [0, 1]: a threshold outside would silently keep all or none."""
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{name} {value:g} is outside [0, 1] (a probability or calibrated score)")


@dataclass(frozen=True)
class TissueConfig:
    """Tissue detection on a thumbnail."""

    mpp: float = 8.0  # thumbnail resolution, µm/px
    min_chroma: int = 15  # max(RGB) - min(RGB) below this is grey: glass, dust, shadow
    glass_brightness: int = 215  # min(RGB) above this (and grey) is empty glass
    black_level: int = 40  # max(RGB) below this is a scanner's blank black area or black ink
    pen_green_excess: int = 10  # G above R by this much is marker ink (H&E keeps G lowest)
    min_area_um2: float = 5000.0  # tissue fragments smaller than this are dropped
    max_hole_um2: float = 50000.0  # holes (fat, lumina) smaller than this count as tissue
    whole: bool = False  # the whole image is tissue: ROI crops and patches smaller than min_area_um2


@dataclass(frozen=True)
class TilingConfig:
    """The tile grid the models see."""

    mpp: float = 0.25  # model resolution, µm/px
    tile_size: int = 512  # tile side in pixels at that mpp, halo included
    halo: int = 32  # overlap on each side, pixels at that mpp

    def __post_init__(self):
        if self.mpp <= 0:
            raise SettingsError(f"tiling.mpp must be positive, got {self.mpp}")
        if self.halo < 0 or self.tile_size - 2 * self.halo < 16:
            raise SettingsError(
                f"tiling.tile_size {self.tile_size} must exceed twice tiling.halo {self.halo} by at least 16"
            )


@dataclass(frozen=True)
class SegmentationNetConfig:
    """The phase-1 network (see wsimito.nets.unet.build_segmentation_net)."""

    arch: str = "wavelet"  # "wavelet" (the paper's) or "plain" (max-pool / transposed conv)
    widths: tuple = (32, 64, 128, 256)  # channels per level; one halving per level after the first
    convs_per_block: int = 4  # 3x3 conv + BatchNorm + ReLU layers per block
    in_channels: int = 3
    num_classes: int = 2


@dataclass(frozen=True)
class SegTrainingConfig:
    """Phase-1 training schedule (the paper: Adam, batch 8, 100 epochs, lr 1e-3 decayed to 1e-6)."""

    epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    lr_min: float = 1e-6  # reached at the last epoch, exponential decay
    crop: int = 256  # training crop side, pixels at tiling.mpp
    crops_per_epoch: int = 256
    mitosis_crop_fraction: float = 0.5  # share of crops that contain a mitosis (they are rare)
    val_fraction: float = 0.2  # share of images held out for validation Dice
    stain_sigma: float = 0.05  # H&E optical-density jitter
    brightness: float = 0.05
    # After the epochs, optionally: steps on whole point-labelled fields next to the crops (fine_tune_on_fields
    # in wsimito/train_seg.py), so phase 1 sees the look-alikes around mitoses. 0: no such stage (the paper's).
    field_steps: int = 0
    field_share: float = 0.75  # share of each of those batches cut from the fields; the rest from the crops
    field_lr: float = 3e-4  # that stage's start, decayed exponentially to lr_min
    field_mitosis_fraction: float = 0.3  # share of field cuts drawn around a labelled mitosis

    def __post_init__(self):
        check_fraction("train_seg.field_share", self.field_share)
        check_fraction("train_seg.field_mitosis_fraction", self.field_mitosis_fraction)


@dataclass(frozen=True)
class BoxesConfig:
    """Points -> boxes (phase-1 output): the segmented region around each weak point label."""

    threshold: float = 0.5  # mitosis probability that counts as segmented
    window_um: float = 64.0  # side of the window segmented around each point
    max_box_um: float = 40.0  # a region wider than this is not one mitosis: use the fallback
    fallback: str = "fixed"  # "fixed": a square around the point; "drop": no box
    fallback_size_um: float = 12.5  # side of that square (MIDOG's 50 px at 0.25 µm/px)

    def __post_init__(self):
        if self.fallback not in ("fixed", "drop"):
            raise SettingsError(f"boxes.fallback must be 'fixed' or 'drop', got {self.fallback!r}")
        check_fraction("boxes.threshold", self.threshold)


@dataclass(frozen=True)
class DetectorConfig:
    """Phase 2: the R-CNN (Girshick et al. 2014) sized for mitoses, and its proposals."""

    proposals: str = "segmentation"  # segmentation | segmentation+search | search-fast | search-quality
    proposal_threshold: float = 0.3  # mitosis probability whose regions become proposals
    proposal_margin_um: float = 0.0  # grown on each side of a segmented region (the warp adds context)
    min_box_um: float = 3.0  # proposals with a shorter side are ignored
    max_box_um: float = 40.0  # proposals with a longer side are ignored
    stain_normalization: str = "none"  # "macenko": the R-CNN sees each image in one reference staining
    stain_scope: str = "image"  # detect estimates the staining per tile ("image") or once per slide ("slide")
    warp: int = 48  # regions are warped to warp x warp pixels
    context: int = 8  # pixels of surrounding context on each side of the warp (Girshick: 16 of 227)
    window: int = 0  # > 0: each region is this many px square around the box's centre, at true size, not a warp
    cnn_widths: tuple = (16, 32, 64, 128)
    epochs: int = 20
    batches_per_epoch: int = 40
    positives_per_batch: int = 32  # the paper's minibatch: 32 positive and 96 negative regions
    negatives_per_batch: int = 96
    field_positive_share: float = 0.0  # share of each batch's positives drawn from whole fields' label boxes
    field_negative_share: float = 0.0  # share of each batch's negatives drawn from whole fields' proposals
    lr: float = 1e-3
    lr_min: float = 1e-5
    max_regions_per_image: int = 64  # proposals kept per training image (all positives, then sampled)
    cap_tile_px: int = 0  # > 0: that cap counts per cap_tile_px² of image, so a whole field is not one crop
    mining_rounds: int = 0  # R-CNN hard-negative rounds: add the CNN's worst false proposals, train on
    stain_sigma: float = 0.05  # H&E optical-density jitter of training regions (after normalisation)
    brightness: float = 0.05
    half_resolution: float = 0.0  # share of training regions shown as a 20x scan enlarged to the model mpp
    head: str = "svm"  # svm: the paper's linear SVM on CNN features; softmax: the CNN's own classifier
    tta: bool = False  # score each region as the mean of its 8 flips and rotations
    members: int = 1  # > 1: that many R-CNNs, trained with seeds seed, seed + 1, ..., score as their mean
    background_quantile: float = 0.0  # > 0: scores relative to their slide's background at this quantile
    fg_iou: float = 0.5  # a region with this IoU to a label box is a positive for the CNN
    svm_negative_iou: float = 0.3  # below this IoU a region is an SVM negative
    svm_c: float = 0.01
    hard_negative_rounds: int = 2
    bbox_iou: float = 0.6  # box regression learns from proposals with more IoU than this
    ridge_lambda: float = 100.0
    nms_iou: float = 0.3
    threshold: float = 0.5  # calibrated score at which a detection counts as a mitosis
    choose_threshold: bool = True  # train-det replaces threshold by the F1-best one on its calibration fields
    val_fraction: float = 0.2  # share of images held out to report F1 while training
    duplicate_radius_um: float = 5.0  # detections closer than this (across tile borders) are one mitosis

    def __post_init__(self):
        allowed = ("segmentation", "segmentation+search", "search-fast", "search-quality")
        if self.proposals not in allowed:
            raise SettingsError(f"detector.proposals must be one of {', '.join(allowed)}, got {self.proposals!r}")
        if self.stain_scope not in ("image", "slide"):
            raise SettingsError(f"detector.stain_scope must be 'image' or 'slide', got {self.stain_scope!r}")
        if self.head not in ("svm", "softmax"):
            raise SettingsError(f"detector.head must be 'svm' or 'softmax', got {self.head!r}")
        if self.stain_normalization not in ("none", "macenko"):
            raise SettingsError("detector.stain_normalization must be 'none' or 'macenko', "
                                f"got {self.stain_normalization!r}")
        if not isinstance(self.members, int) or self.members < 1:
            raise SettingsError(f"detector.members must be a whole number of at least 1, got {self.members!r}")
        if not isinstance(self.window, int) or self.window < 0:
            raise SettingsError(f"detector.window must be a whole number of pixels (0: warp the box), "
                                f"got {self.window!r}")
        check_fraction("detector.threshold", self.threshold)
        check_fraction("detector.background_quantile", self.background_quantile)
        check_fraction("detector.proposal_threshold", self.proposal_threshold)
        check_fraction("detector.field_positive_share", self.field_positive_share)
        check_fraction("detector.field_negative_share", self.field_negative_share)


@dataclass(frozen=True)
class EvaluationConfig:
    """Matching detections to truth (wsimito evaluate)."""

    radius_um: float = 8.0  # MITOS 2012 / ICPR 2014 radius; MIDOG uses 7.5
    match: str = "hungarian"  # or "greedy" (the MIDOG / evalutils rule)

    def __post_init__(self):
        if self.radius_um < 0 or self.match not in ("hungarian", "greedy"):
            raise SettingsError(
                f"evaluation: radius_um must be >= 0 and match hungarian|greedy, got {self.radius_um}, {self.match!r}"
            )


@dataclass(frozen=True)
class ClinicalConfig:
    """Clinical numbers per slide."""

    hotspot_area_mm2: float = 2.0  # about ten 0.5 mm fields (1.96 mm²)
    hotspot_shape: str = "square"  # or "circle"
    hpf_diameter_mm: float = 0.5  # field diameter for the per-10-HPF count and the Nottingham table

    def __post_init__(self):
        if self.hotspot_area_mm2 <= 0 or self.hotspot_shape not in ("square", "circle"):
            raise SettingsError("clinical: need hotspot_area_mm2 > 0 and hotspot_shape square|circle")
        if not 0.395 <= self.hpf_diameter_mm < 0.695:
            raise SettingsError(
                f"clinical.hpf_diameter_mm {self.hpf_diameter_mm} is outside the Nottingham table (0.40-0.69 mm)"
            )


@dataclass(frozen=True)
class ClusterConfig:
    """Dask workers that `wsimito detect --cluster slurm` starts as SLURM jobs (dask-jobqueue), one worker each."""

    jobs: int = 4  # worker jobs submitted; each worker process loads the model once
    cores: int = 8  # CPU cores per job (--cpus-per-task): worker threads and tile readers
    memory: str = "32GB"  # memory per job
    gpus: int = 1  # GPUs per job: --gres=gpu:N and the Dask resource GPU=N; 0 for CPU-only workers
    gres: str = ""  # the --gres value instead of gpu:N, e.g. "gpu:a100:1"
    queue: str = ""  # partition; "" = the site's default
    account: str = ""  # account to charge; "" = the user's default
    walltime: str = "04:00:00"  # per worker job
    job_directives: str = ""  # more sbatch options, space-separated, e.g. "--constraint=a100 --qos=long"
    prologue: str = ""  # shell commands before the worker starts, ';'-separated, e.g. "module load cuda"
    interface: str = ""  # network interface for scheduler and workers, e.g. "ib0"; "" = the default route
    python: str = ""  # python on the compute nodes; "" = the one running wsimito
    log_directory: str = "dask-worker-logs"  # one log per worker job
    local_directory: str = ""  # worker scratch; "" = Dask's default
    start_timeout_s: float = 1800.0  # give up when no worker job has started by then (queue wait included)

    def __post_init__(self):
        if self.jobs < 1 or self.cores < 1 or self.gpus < 0 or self.start_timeout_s <= 0:
            raise SettingsError(
                f"cluster: need jobs >= 1, cores >= 1, gpus >= 0 and start_timeout_s > 0, got jobs {self.jobs}, "
                f"cores {self.cores}, gpus {self.gpus}, start_timeout_s {self.start_timeout_s}"
            )


@dataclass(frozen=True)
class Config:
    tissue: TissueConfig = field(default_factory=TissueConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    segmentation: SegmentationNetConfig = field(default_factory=SegmentationNetConfig)
    train_seg: SegTrainingConfig = field(default_factory=SegTrainingConfig)
    boxes: BoxesConfig = field(default_factory=BoxesConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    clinical: ClinicalConfig = field(default_factory=ClinicalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def to_dict(self) -> dict:
        """Plain YAML/JSON types (tuples as lists), as recorded in outputs and model files."""
        return plain(dataclasses.asdict(self))


def plain(value):
    """``value`` with tuples turned into lists and keys into strings, recursively."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def load_config(path=None, overrides: dict | None = None) -> Config:
    """Defaults, updated by the YAML file at ``path``, then by ``{"section.key": value}`` overrides."""
    data = _read(path)
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        data.setdefault(section, {})[key] = value
    return build_section(Config, data, str(path) if path else "config")


def given_keys(path=None, overrides: dict | None = None) -> list[str]:
    """The ``section.key`` names the YAML file at ``path`` and the overrides set: what a user asked for, as
    opposed to the defaults (a command can then tell a setting it cannot honour from one nobody gave)."""
    keys = [f"{section}.{key}" for section, values in _read(path).items() if isinstance(values, dict)
            for key in values]
    return keys + [key for key in (overrides or {}) if key not in keys]


def _read(path) -> dict:
    """The mapping of sections in the YAML file at ``path`` ({} for none)."""
    if path is None:
        return {}
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise SettingsError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: a config must be a mapping of sections")
    return data


def build_section(cls, data: dict, where: str):
    """Instantiate a config dataclass from a mapping, refusing keys it does not know."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SettingsError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
    values = {}
    for name, value in data.items():
        default = known[name].default_factory() if known[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise SettingsError(f"{where}: section '{name}' must be a mapping")
            values[name] = build_section(type(default), value, f"{where}: {name}")
        else:
            values[name] = _coerce(value, known[name].default, f"{where}: {name}")
    return cls(**values)


def _coerce(value, default, where: str):
    """Check a scalar against the type of its default (an int is accepted where a float is)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, tuple):
        kinds = (type(default[0]),) if default else (int, float, str)
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, kinds) for v in value)
        value = tuple(value) if ok else value
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise SettingsError(f"{where} must be {type(default).__name__}, got {value!r}")
    return value

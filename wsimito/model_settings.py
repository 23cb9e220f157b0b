"""Which settings belong to a detector bundle and which to a detect run, and what a run actually used.

A bundle's networks were trained at one resolution, with one net, one proposal rule and one R-CNN: ``detect``
runs them as they are (``MitosisModel.settings``), whatever a run's config says. So a run that asks for other
model settings is refused in one line, before any slide is read, instead of being silently given the bundle's;
a config that restates the bundle's values, or sets only what a run decides, is fine. The outputs record the
settings used: the bundle's for the model, the run's for the rest.

A run decides the tissue mask, the tile size and halo it reads, the threshold, the radius that merges
duplicates across tile borders, the clinical numbers, evaluation and the cluster. Everything else under
``segmentation``, ``train_seg``, ``boxes`` and ``detector``, and ``tiling.mpp``, is the model's: training
settings included, since asking for them at detect means expecting a model that was trained otherwise.
"""

from __future__ import annotations

import dataclasses
import math

from wsimito.bundle import MitosisModel
from wsimito.config import Config, plain
from wsimito.errors import SettingsError

MODEL_SECTIONS = ("segmentation", "train_seg", "boxes", "detector")
RUN_KEYS = ("tiling.tile_size", "tiling.halo", "detector.threshold", "detector.duplicate_radius_um")
_SHOWN = 3  # conflicts spelled out in the message before "and N more"


def model_owned(key: str) -> bool:
    """Whether ``section.key`` is a setting of the model, fixed when it was trained."""
    return key not in RUN_KEYS and (key.split(".", 1)[0] in MODEL_SECTIONS or key == "tiling.mpp")


def check_model_settings(model: MitosisModel, config: Config, given, bundle, source) -> None:
    """Refuse (a ``SettingsError``, one line) model settings among ``given`` (``config.given_keys``) whose value
    in ``config`` differs from the bundle's; ``bundle`` and ``source`` (the config file) name them."""
    own = model.settings
    conflicts = [(key, _value(config, key), _value(own, key)) for key in given
                 if model_owned(key) and not _same(_value(config, key), _value(own, key))]
    if not conflicts:
        return
    shown = "; ".join(f"{key} {plain(asked)} (the model's: {plain(has)})" for key, asked, has in conflicts[:_SHOWN])
    more = f"; and {len(conflicts) - _SHOWN} more: {', '.join(k for k, _, _ in conflicts[_SHOWN:])}" \
        if len(conflicts) > _SHOWN else ""
    raise SettingsError(f"{source} sets model settings other than those of the model {bundle}, which detect "
                        f"would not use: {shown}{more}; remove them from the config (detect takes a model's "
                        "settings from its bundle) or train a model with them")


def run_threshold(model: MitosisModel, config: Config, given, option: float | None) -> float:
    """The threshold a run counts at: ``--threshold``, else the config's ``detector.threshold`` when given, else
    the model's own."""
    if option is not None:
        return option
    return config.detector.threshold if "detector.threshold" in given else model.config.detector.threshold


def used_settings(model: MitosisModel, config: Config, threshold: float) -> Config:
    """The settings a run of ``model`` with ``config`` at ``threshold`` uses: what outputs record."""
    own = model.settings
    sections = {}
    for section in dataclasses.fields(Config):
        run, bundle = getattr(config, section.name), getattr(own, section.name)
        sections[section.name] = dataclasses.replace(run, **{
            field.name: getattr(bundle if model_owned(f"{section.name}.{field.name}") else run, field.name)
            for field in dataclasses.fields(run)})
    used = dataclasses.replace(config, **sections)
    return dataclasses.replace(used, detector=dataclasses.replace(used.detector, threshold=threshold))


def _value(config: Config, key: str):
    section, name = key.split(".", 1)
    return getattr(getattr(config, section), name)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b

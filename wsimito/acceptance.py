"""What a trained detector is held to beyond F1 on fields, each check through the real ``detect`` pipeline.

- **Crops of unseen slides and labs**: each crop is its own image with a mitosis at
  its centre. The share whose centre any detection reaches (at any score: the
  proposals and NMS let it through) and the share detected at the model's
  threshold. A model that learned one lab's colours fails this on the others.
- **A slide with no visible mitosis** (the README's sample slide): how many it
  reports at the model's threshold. Dark stromal nuclei and lymphocytes are what
  a weak detector counts there.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from wsimito.bundle import MitosisModel, bundle_sha256
from wsimito.config import Config
from wsimito.datasets.crops import Crop
from wsimito.pipeline import detect_slide


def crop_recall(model_dir: Path, model: MitosisModel, config: Config, crops: list[Crop], scratch: Path,
                device="cpu") -> dict:
    """Proposed (any score) and detected (at the model's threshold) shares of the crops' centre mitoses,
    matched within the evaluation radius."""
    whole = replace(config, tissue=replace(config.tissue, whole=True))  # a 32 µm crop is below the tissue minimum
    sha = bundle_sha256(model_dir)
    proposed = detected = 0
    scores = []
    for crop in crops:
        result = detect_slide(crop.path, scratch, model, sha, whole, 0.0, device, workers=1, mpp=crop.mpp)
        table = result.table
        distance = np.hypot(*(table[:, :2] - crop.points[0]).T) * crop.mpp if len(table) else np.zeros(0)
        near = table[distance <= config.evaluation.radius_um, 2] if len(table) else np.zeros(0)
        best = float(near.max()) if len(near) else 0.0
        scores.append(best)
        proposed += bool(len(near))
        detected += best >= model.config.detector.threshold
    count = max(len(crops), 1)
    return {"crops": len(crops), "proposed": proposed / count, "detected": detected / count,
            "median_score": float(np.median(scores)) if scores else float("nan")}


def count_on_slide(model_dir: Path, model: MitosisModel, config: Config, path: Path, scratch: Path,
                   device="cpu") -> dict:
    """Detections reported on one slide at the model's threshold, with their scores, best first."""
    result = detect_slide(path, scratch, model, bundle_sha256(model_dir), config, model.config.detector.threshold,
                          device, workers=2)
    scores = sorted(result.table[:, 2].tolist(), reverse=True)
    return {"slide": Path(path).name, "detections": len(scores), "scores": [round(s, 3) for s in scores[:20]]}

"""Whether a finished slide answers the question a new run asks, so a rerun never returns stale numbers.

A result is reused only when it was made with the same model (its sha256), the same wsimito version and the
same settings that decide which candidates exist (tissue, tile grid, duplicate merging). A different threshold
or clinical setting does not need the networks: the store holds every candidate they scored, so the outputs
are made again from those. Anything else must be redone, which only ``--overwrite`` may do.
"""

from __future__ import annotations

from wsimito import __version__
from wsimito.config import Config


def _candidate_settings(config: dict) -> dict:
    """The parts of a run's config that change the candidates (not the threshold or the clinical numbers)."""
    tiling = config.get("tiling", {})
    return {"tissue": config.get("tissue"), "tile_size": tiling.get("tile_size"), "halo": tiling.get("halo"),
            "duplicate_radius_um": config.get("detector", {}).get("duplicate_radius_um")}


def stale_reason(attributes: dict, model_sha256: str, config: Config) -> str | None:
    """Why a finished result cannot answer this run (None: it can, perhaps after ``needs_new_outputs``)."""
    made_with = attributes.get("model_sha256", "")
    if made_with != model_sha256:
        return f"was made with another model (sha256 {made_with[:12]}, this run {model_sha256[:12]})"
    if attributes.get("wsimito_version") != __version__:
        return f"was made by wsimito {attributes.get('wsimito_version')}, this is {__version__}"
    before, now = _candidate_settings(attributes.get("config", {})), _candidate_settings(config.to_dict())
    changed = sorted(key for key in now if before.get(key) != now[key])
    if changed:
        return f"was made with other settings ({', '.join(changed)})"
    return None


def needs_new_outputs(attributes: dict, threshold: float, config: Config) -> bool:
    """Whether the outputs must be made again from the stored candidates: another threshold or clinical setting."""
    return (attributes.get("threshold") != threshold
            or attributes.get("config", {}).get("clinical") != config.to_dict()["clinical"])

"""The detector shipped with wsimito (see MODEL_CARD.md here), used when no --model is given."""

from pathlib import Path

from wsimito.errors import WsimitoError

DEFAULT_MODEL = Path(__file__).with_name("default")


def default_model_path() -> Path:
    if not (DEFAULT_MODEL / "model.json").exists():
        raise WsimitoError(
            f"{DEFAULT_MODEL}: no default model is installed; train one (train-seg, make-boxes, train-det) "
            "and pass --model DIR"
        )
    return DEFAULT_MODEL

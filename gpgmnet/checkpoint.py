"""GPGMNet checkpoints: weights plus the constructor settings and training step.

A checkpoint is a ``torch.save`` dict::

    {"format": "gpgmnet-checkpoint/1", "scale": 4, "config": {...GPGMNet kwargs...},
     "step": 12000, "state_dict": {...}, ...anything the trainer adds}

Every way a checkpoint can be wrong (missing, unreadable, another scale, other
weights) raises :class:`CheckpointError` with a one-line message, so command-line
tools can print it instead of a traceback.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from gpgmnet.arch import GPGMNet
from gpgmnet.contract import check_scale

FORMAT = "gpgmnet-checkpoint/1"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
UNTRAINED_SEED = 0

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def default_checkpoint(scale: int, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """Where the shipped checkpoint for a scale lives: ``weights/gpgmnet_x{scale}.pt``."""
    check_scale(scale)
    return weights_dir / f"gpgmnet_x{scale}.pt"


def save_checkpoint(path: Path, network: GPGMNet, config: dict[str, Any], step: int, **extra: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    payload = {"format": FORMAT, "scale": network.scale, "config": config, "step": step, "state_dict": state, **extra}
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)  # never leave a half-written checkpoint behind


def read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a PyTorch file ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a GPGMNet checkpoint (no '{FORMAT}' format tag)")
    return payload


def load_network(path: Path | None, scale: int, *, strict_default: bool = False) -> tuple[GPGMNet, dict[str, Any]]:
    """GPGMNet for ``scale`` in eval mode, with the weights of ``path``.

    With ``path=None`` the shipped checkpoint is used when it exists; otherwise
    (``strict_default=False``) a seeded, untrained network, with a warning: the
    service then runs end to end, but its output is not a useful HDR grade.
    Returns the network and the checkpoint's metadata (without the weights).
    """
    check_scale(scale)
    if path is None:
        path = default_checkpoint(scale)
        if not path.exists() and not strict_default:
            log.warning("no checkpoint at %s: using an untrained GPGMNet x%d (seed %d)", path, scale, UNTRAINED_SEED)
            torch.manual_seed(UNTRAINED_SEED)
            return GPGMNet(scale=scale).eval(), {"step": 0, "source": "untrained", "seed": UNTRAINED_SEED}
    payload = read_checkpoint(path)
    if payload.get("scale") != scale:
        raise CheckpointError(f"checkpoint {path} is for x{payload.get('scale')}, not x{scale}")
    config = dict(payload.get("config") or {})
    config["scale"] = scale
    try:
        network = GPGMNet(**config)
        network.load_state_dict(payload["state_dict"])
    except (TypeError, KeyError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {path} does not fit GPGMNet: {first_line}") from None
    metadata = {k: v for k, v in payload.items() if k != "state_dict"}
    metadata["source"] = str(path)
    return network.eval(), metadata

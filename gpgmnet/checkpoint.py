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
from sritm_core.contract import check_scale

FORMAT = "gpgmnet-checkpoint/1"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
UNTRAINED_SEED = 0

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def default_checkpoint(scale: int, weights_dir: Path | None = None) -> Path:
    """Where the shipped checkpoint for a scale lives: ``weights/gpgmnet_x{scale}.pt``."""
    check_scale(scale)
    return (WEIGHTS_DIR if weights_dir is None else weights_dir) / f"gpgmnet_x{scale}.pt"


def save_checkpoint(path: Path, network: GPGMNet, config: dict[str, Any], step: int, **extra: Any) -> None:
    """Write ``network``'s weights (on the CPU), its constructor ``config``, ``step`` and ``extra`` to ``path``.

    The file is written beside ``path`` first and then renamed over it, so a
    crash never leaves a half-written checkpoint.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    payload = {"format": FORMAT, "scale": network.scale, "config": config, "step": step, "state_dict": state, **extra}
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)  # never leave a half-written checkpoint behind


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The whole checkpoint dict of ``path``, on the CPU, weights included.

    Raises:
        CheckpointError: ``path`` is missing, not a file, unreadable, or not a GPGMNet checkpoint.
    """
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


def load_network(path: Path | None, scale: int, *, random_weights: bool = False) -> tuple[GPGMNet, dict[str, Any]]:
    """GPGMNet for ``scale`` in eval mode, with the weights of ``path``.

    With ``path=None`` the shipped checkpoint is used. Where there is none (an
    install without ``weights/``) this raises, so nothing serves or exports an
    untrained network by accident; ``random_weights=True`` (benchmarks, plumbing
    tests) asks for the seeded untrained network instead, with a warning.
    Returns the network and the checkpoint's metadata (without the weights).

    Raises:
        CheckpointError: no checkpoint (and ``random_weights`` not set), or one that cannot be used.
    """
    check_scale(scale)
    if path is None:
        path = default_checkpoint(scale)
        if not path.exists() and not random_weights:
            raise CheckpointError(
                f"no checkpoint at {path}: give one, or ask explicitly for random weights (an untrained network)"
            )
        if not path.exists():
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

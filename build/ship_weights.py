#!/usr/bin/env python
r"""Ship a trained checkpoint into ``weights/``: the weights and their provenance, without the training state.

    .venv/bin/python -m build.ship_weights runs/x4/gpgmnet_x4.pt --command "sritm train ..." \
        [--evaluation eval_x4.json]

writes ``weights/gpgmnet_x{s}.pt`` (weights, network config, step, loss and
validation history: a few MB, loadable by ``gpgmnet.checkpoint.load_network``
and usable with ``sritm train --init``), the loss curve as
``weights/gpgmnet_x{s}.loss.png`` and ``weights/gpgmnet_x{s}.json`` (the
command, step count, training settings, validation PSNR by step and, when
given, the ``sritm evaluate`` JSON). The optimizer and RNG state stay behind:
resume a run from its own checkpoint under ``runs/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from gpgmnet.checkpoint import WEIGHTS_DIR, CheckpointError, load_network, read_checkpoint, save_checkpoint

TRAINING_ONLY = ("optimizer", "rng_state", "cuda_rng_state")


def ship(source: Path, command: str, evaluation: Path | None, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """Write ``source``'s weights and provenance as ``weights_dir/gpgmnet_x{s}.pt`` (+ ``.json``, ``.loss.png``).

    Args:
        source: the training checkpoint.
        command: the training command(s), recorded beside the weights.
        evaluation: an ``sritm evaluate --json`` output to record, if any.
        weights_dir: where the shipped files go.

    Returns:
        The shipped checkpoint's path.
    """
    payload = read_checkpoint(source)
    scale = int(payload["scale"])
    network, _ = load_network(source, scale)
    target = weights_dir / f"gpgmnet_x{scale}.pt"
    written_apart = (*TRAINING_ONLY, "state_dict", "format", "scale", "config", "step")
    kept = {k: v for k, v in payload.items() if k not in written_apart}
    save_checkpoint(target, network, dict(payload.get("config") or {}), int(payload["step"]), **kept)
    loss_curve = source.with_name(source.stem + ".loss.png")
    if loss_curve.is_file():
        shutil.copyfile(loss_curve, target.with_suffix(".loss.png"))
    record = {
        "checkpoint": target.name,
        "command": command,
        "step": int(payload["step"]),
        "train_config": {k: v for k, v in (payload.get("train_config") or {}).items() if k not in ("out", "cache_dir")},
        "val_psnr_by_step": payload.get("val_history", []),
        "parameters": sum(p.numel() for p in network.parameters()),
        "torch": torch.__version__,
    }
    if evaluation is not None:
        record["evaluation"] = json.loads(evaluation.read_text())
    target.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    """Ship the checkpoint named on the command line; 0 on success, 2 when it cannot be read."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--command", required=True, help="the training command(s), recorded beside the weights")
    parser.add_argument("--evaluation", type=Path, help="sritm evaluate --json output to record")
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args(argv)
    try:
        target = ship(args.checkpoint, args.command, args.evaluation, args.weights_dir)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{target} ({target.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

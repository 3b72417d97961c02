"""Train GPGMNet (``sritm train``; :func:`main`).

Settings come from, in increasing priority: :data:`DEFAULTS` (the paper's: L2
loss, Adam, learning rate 1e-4, batch 32, 290K iterations, 160 x 160 HR
patches), a JSON config (``--config``, default
``gpgmnet/configs/train_x{scale}.json``), explicit flags, then
``--set key=value`` (values are JSON, else strings; ``model.<arg>`` sets a
GPGMNet keyword, e.g. ``--set model.modulation='"gfm"'`` or
``--set model.modulation=gfm``). Relative paths in a config file are relative
to the repository root; on the command line, to the working directory.

Data: ``"data": "scenes"`` forms pairs from the training part of the split of
``scenes_dir`` (:mod:`gpgmnet.data`); the validation part, rendered once to
the cache, gives the validation PSNR. ``"data": "kim"`` reads Kim et al.'s
patches from ``kim_dir`` (last 500 = validation).

Reproducibility: the network is initialised from ``seed``; batch ``t`` is a
function of (seed, t) only (whatever the number of loader workers); the
checkpoint holds the weights, the Adam state, the step, the loss and
validation histories and the torch RNG state (dropout/DropBlock). So a run of
N steps and a run of k steps resumed (``--resume``) to N give the same weights.
The learning rate at step t is ``lr * lr_gamma ** (number of lr_milestones <= t)``
(the paper gives only the initial rate; ``lr_milestones`` is empty by default).

Outputs: the checkpoint (``out``, written with
:func:`gpgmnet.checkpoint.save_checkpoint` every ``checkpoint_every`` steps
and at the end or on Ctrl-C), and beside it ``<stem>.log.json`` (config,
per-step loss, validation PSNR, seconds per step) and ``<stem>.loss.png``.
Errors in the data, the config or a checkpoint print one ``error: ...`` line
and exit with status 2.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gpgmnet import data, gradings
from gpgmnet.arch import GPGMNet
from gpgmnet.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from sritm_core.contract import SCALES
from sritm_serving import processing_torch

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PATH_KEYS = ("scenes_dir", "split_file", "kim_dir", "cache_dir", "out")

DEFAULTS: dict[str, Any] = {
    "scale": 4,
    "model": {},
    "data": "scenes",
    "scenes_dir": "../shared/data/hdr-scenes",
    "split_file": "gpgmnet/splits/hdr_scenes.json",
    "kim_dir": None,
    "hr_patch": 160,
    "batch_size": 32,
    "iterations": 290_000,
    "lr": 1e-4,
    "lr_milestones": [],
    "lr_gamma": 0.1,
    "adam_betas": [0.9, 0.999],
    "weight_decay": 0.0,
    "loss": "l2",
    "seed": 0,
    "exposure_variants": 4,
    "val_crop": data.DEFAULT_VALIDATION_CROP,
    "val_limit": None,
    "val_every": 5000,
    "checkpoint_every": 5000,
    "workers": 2,
    "device": "cpu",
    "cache_dir": "~/.cache/sritm",
    "use_cache": True,
    "out": "runs/gpgmnet_x{scale}/gpgmnet_x{scale}.pt",
    "graded": False,
    "val_gradings": [gradings.DEFAULT],
    "val_compressed": False,
    "precision": "auto",
}
"""Every setting, with the paper's training defaults."""


class TrainError(ValueError):
    """A bad setting; the message is one line."""


# --------------------------------------------------------------------------
# configuration


def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON when it parses (numbers, true/false/null, lists, quoted strings), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_setting(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (``model.<arg>`` for GPGMNet keywords) in ``config``; unknown keys are refused."""
    if key.startswith("model."):
        config.setdefault("model", {})[key.split(".", 1)[1]] = value
        return
    if key not in DEFAULTS:
        raise TrainError(f"unknown setting {key!r} (known: {', '.join(sorted(DEFAULTS))}, model.<GPGMNet argument>)")
    config[key] = value


def _resolve_paths(config: dict[str, Any], base: Path) -> None:
    """Make the relative paths of ``config`` absolute against ``base`` (``~`` expanded)."""
    for key in PATH_KEYS:
        value = config.get(key)
        if isinstance(value, str) and value:
            path = Path(value).expanduser()
            config[key] = str(path if path.is_absolute() else base / path)


def _substitute_scale(config: dict[str, Any]) -> None:
    """Replace ``{scale}`` in the path settings by the run's scale."""
    for key in PATH_KEYS:
        value = config.get(key)
        if isinstance(value, str):
            config[key] = str(Path(value.replace("{scale}", str(config["scale"]))).resolve())


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings of a JSON config file (its ``_comment`` dropped); unknown keys are refused."""
    try:
        loaded = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TrainError(f"config file {path} does not exist") from None
    except (OSError, ValueError) as error:
        raise TrainError(f"config file {path} is not valid JSON ({error})") from None
    if not isinstance(loaded, dict):
        raise TrainError(f"config file {path} must hold a JSON object")
    loaded.pop("_comment", None)
    unknown = sorted(set(loaded) - set(DEFAULTS))
    if unknown:
        raise TrainError(f"config file {path} has unknown setting(s): {', '.join(unknown)}")
    return loaded


def check_config(config: dict[str, Any]) -> None:
    """Refuse settings that cannot work, with a one-line message."""
    if config["scale"] not in SCALES:
        raise TrainError(f"scale must be one of {SCALES}, not {config['scale']!r}")
    for key in ("batch_size", "iterations", "hr_patch", "val_every", "checkpoint_every"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise TrainError(f"{key} must be a positive integer, not {config[key]!r}")
    if not isinstance(config["workers"], int) or config["workers"] < 0:
        raise TrainError(f"workers must be an integer >= 0, not {config['workers']!r}")
    if config["data"] not in ("scenes", "kim"):
        raise TrainError(f"data must be 'scenes' or 'kim', not {config['data']!r}")
    if config["data"] == "kim" and not config["kim_dir"]:
        raise TrainError("data 'kim' needs kim_dir (--kim DIR)")
    if config["loss"] not in ("l2", "l1"):
        raise TrainError(f"loss must be 'l2' (the paper's) or 'l1', not {config['loss']!r}")
    if not isinstance(config["model"], dict):
        raise TrainError("model must be an object of GPGMNet keyword arguments")
    if config["precision"] not in ("auto", "bf16", "fp32"):
        raise TrainError(f"precision must be auto, bf16 or fp32, not {config['precision']!r}")
    unknown = [g for g in config["val_gradings"] if g not in gradings.NAMES]
    if unknown:
        raise TrainError(f"unknown val_gradings {unknown}; allowed: {', '.join(gradings.NAMES)}")
    if not isinstance(config["lr"], (int, float)) or not config["lr"] > 0:
        raise TrainError(f"lr must be a positive number, not {config['lr']!r}")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``sritm train``; flags left out are None, so the config's values stand."""
    parser = argparse.ArgumentParser(
        prog="sritm train",
        description="Train GPGMNet on SDR/HDR10 pairs formed from HDR masters (or on Kim et al.'s patches).",
    )
    parser.add_argument("--config", type=Path, help="JSON config (default gpgmnet/configs/train_x{scale}.json)")
    parser.add_argument("--scale", type=int, choices=SCALES, help="upscaling factor (default: the config's, else 4)")
    parser.add_argument("--scenes", type=Path, help="folder of EXR/.hdr masters (setting scenes_dir)")
    parser.add_argument("--split-file", type=Path, help="train/val split JSON (setting split_file)")
    parser.add_argument("--kim", type=Path, help="train on Kim et al.'s .mat patches in this folder instead")
    parser.add_argument("--out", type=Path, help="checkpoint path; the log and loss curve go beside it")
    parser.add_argument("--resume", type=Path, help="continue from this checkpoint (its settings, then overrides)")
    parser.add_argument("--init", type=Path,
                        help="start from another checkpoint's weights where names and shapes match "
                        "(e.g. x2 from x4: all but the second up-sampling stage); a fresh run otherwise")
    parser.add_argument("--iterations", type=int, help="total training steps")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="initial learning rate")
    parser.add_argument("--device", help="cpu, cuda, cuda:N")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int, help="DataLoader worker processes (0: in the training process)")
    parser.add_argument("--cache-dir", type=Path, help="cache root for formed pairs (default ~/.cache/sritm)")
    parser.add_argument("--no-cache", action="store_true", help="form pairs in memory only")
    parser.add_argument("--val-every", type=int)
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="override any setting (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def resolve_config(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The run's settings and, when resuming, the checkpoint payload."""
    payload = None
    if args.resume is not None:
        payload = read_checkpoint(args.resume)
        if not isinstance(payload.get("train_config"), dict) or "optimizer" not in payload:
            raise CheckpointError(
                f"checkpoint {args.resume} has no training state to resume (not written by sritm train)"
            )
        config = {**copy.deepcopy(DEFAULTS), **copy.deepcopy(payload["train_config"])}
        if args.config is not None:
            config.update(read_config_file(args.config))
            _resolve_paths(config, REPO_ROOT)
        if args.out is None:
            config["out"] = str(args.resume.resolve())
    else:
        config = copy.deepcopy(DEFAULTS)
        config_path = args.config or CONFIG_DIR / f"train_x{args.scale or DEFAULTS['scale']}.json"
        config.update(read_config_file(config_path))
        if args.scale is not None:
            config["scale"] = args.scale
        _resolve_paths(config, REPO_ROOT)

    flags = {
        "scale": args.scale,
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "device": args.device,
        "seed": args.seed,
        "workers": args.workers,
        "val_every": args.val_every,
        "checkpoint_every": args.checkpoint_every,
    }
    paths = {"scenes_dir": args.scenes, "split_file": args.split_file, "kim_dir": args.kim,
             "out": args.out, "cache_dir": args.cache_dir}
    for key, value in flags.items():
        if value is not None:
            config[key] = value
    for key, value in paths.items():
        if value is not None:
            config[key] = str(Path(value).expanduser().absolute())
    if args.kim is not None:
        config["data"] = "kim"
    if args.no_cache:
        config["use_cache"] = False
    if args.init is not None:
        if payload is not None:
            raise TrainError("--init starts a new run; it cannot be combined with --resume")
        config["init"] = str(Path(args.init).expanduser().absolute())
    for setting in args.settings:
        if "=" not in setting:
            raise TrainError(f"--set needs KEY=VALUE, got {setting!r}")
        key, text = setting.split("=", 1)
        value = parse_value(text)
        if key in PATH_KEYS and isinstance(value, str):
            value = str(Path(value).expanduser().absolute())
        apply_setting(config, key.strip(), value)
    check_config(config)
    _substitute_scale(config)
    if payload is not None and payload.get("scale") != config["scale"]:
        raise CheckpointError(f"checkpoint {args.resume} is for x{payload.get('scale')}, not x{config['scale']}")
    return config, payload


# --------------------------------------------------------------------------
# training


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random generators from ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_device(name: str) -> torch.device:
    """The torch device ``name`` (cpu, cuda, cuda:N), refused with a one-line message when unusable here."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"device {name!r} asked for, but CUDA is not available here")
    if device.type not in ("cpu", "cuda"):
        raise TrainError(f"device {name!r} is not supported (use cpu, cuda or cuda:N)")
    return device


def learning_rate(config: dict[str, Any], step: int) -> float:
    """The learning rate at ``step``: ``lr`` times ``lr_gamma`` for every milestone reached."""
    passed = sum(1 for milestone in config["lr_milestones"] if step >= milestone)
    return float(config["lr"]) * float(config["lr_gamma"]) ** passed


Validation = Callable[[], Iterable[tuple[np.ndarray, np.ndarray, str, int]]]
"""Yields (input, target, set name, grading index) for every validation item."""


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matrix maths natively (AMX or AVX512-BF16), read at run time."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        flags = []
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return "amx_bf16" in flags or "avx512_bf16" in flags or bool(amx())


def autocast_dtype(config: dict[str, Any], device: torch.device) -> torch.dtype | None:
    """bf16 when asked for, or on ``auto`` when the CPU has it natively; None for fp32."""
    if config["precision"] == "fp32" or device.type != "cpu":
        return None
    if config["precision"] == "bf16" or cpu_has_bf16():
        return torch.bfloat16
    return None


def convention_input(network: GPGMNet, indices: torch.Tensor) -> torch.Tensor | None:
    """The one-hot a conditioned network takes for grading ``indices``; None for the paper's network."""
    if not network.conventions:
        return None
    return F.one_hot(indices.long(), network.conventions).float()


def classical_input(network: GPGMNet, lr_batch: torch.Tensor) -> torch.Tensor | None:
    """The classical conversion of ``lr_batch`` (N×3×h×w) when the network's skip needs it; else None."""
    if not network.classical_skip:
        return None
    return processing_torch.classical_skip_source(lr_batch)


def build_data(config: dict[str, Any], progress: bool) -> tuple[torch.utils.data.Dataset[Any], Validation]:
    """The training batches (item = step) and a function yielding the validation items.

    Validation sets: each of ``val_gradings``, clean, and with
    ``val_compressed`` also its H.264 CRF 28 twin (set names ``bt2446a``, ``bt2446a+h264``, ...).
    """
    scale, seed = config["scale"], config["seed"]
    if config["data"] == "kim":
        pairs = data.kim_training_pairs(Path(config["kim_dir"]), scale)
        batches: torch.utils.data.Dataset[Any] = data.KimPatchBatches(pairs, config["batch_size"], seed)
        limit = config["val_limit"]
        return batches, lambda: ((lr, hr, "kim", 0) for lr, hr in data.kim_validation_batches(pairs, limit=limit))
    scenes_dir, split_file = Path(config["scenes_dir"]), Path(config["split_file"])
    batches = data.scene_training_batches(
        scenes_dir, scale, config["batch_size"], config["hr_patch"], seed, config["exposure_variants"],
        split_file=split_file, cache_dir=config["cache_dir"], use_cache=config["use_cache"], progress=progress,
        graded=config["graded"],
    )
    val_paths = data.split_files(scenes_dir, "val", split_file)
    sets: list[tuple[str, int, list[data.ValidationSample]]] = []
    for grading in config["val_gradings"]:
        for compressed in (False, True) if config["val_compressed"] else (False,):
            samples = data.render_validation_set(val_paths, scale, config["val_crop"], config["cache_dir"],
                                                 config["use_cache"], grading=grading, compressed=compressed)
            if config["val_limit"]:
                samples = samples[: config["val_limit"]]
            sets.append((grading + ("+h264" if compressed else ""), gradings.index_of(grading), samples))
    return batches, lambda: ((s.lr, s.hr, name, index) for name, index, samples in sets for s in samples)


@torch.no_grad()
def validation_psnr_by_set(network: GPGMNet, validation: Validation, device: torch.device,
                           dtype: torch.dtype | None = None) -> dict[str, float]:
    """Mean PSNR (dB, peak 1, on YUV codes / 1023) of the clamped prediction per validation set."""
    was_training = network.training
    network.eval()
    values: dict[str, list[float]] = {}
    for lr, hr, name, grading in validation():
        x = torch.from_numpy(np.ascontiguousarray(lr)).to(device)
        convention = convention_input(network, torch.full((x.shape[0],), grading))
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            prediction = network(x, convention, classical_input(network, x))
        prediction = prediction.float().clamp(0.0, 1.0)
        target = torch.from_numpy(np.ascontiguousarray(hr)).to(device)
        mse = ((prediction - target) ** 2).flatten(1).mean(dim=1)
        values.setdefault(name, []).extend(math.inf if m == 0 else -10.0 * math.log10(m) for m in mse.tolist())
    network.train(was_training)
    return {name: float(np.mean(v)) for name, v in values.items()}


def validation_psnr(network: GPGMNet, validation: Validation, device: torch.device,
                    dtype: torch.dtype | None = None) -> float:
    """The mean over validation sets of :func:`validation_psnr_by_set`: what picks the best checkpoint."""
    by_set = validation_psnr_by_set(network, validation, device, dtype)
    return float(np.mean(list(by_set.values()))) if by_set else math.nan


def log_paths(checkpoint: Path) -> tuple[Path, Path]:
    """The JSON log and the loss-curve PNG that sit beside a checkpoint."""
    return checkpoint.with_name(checkpoint.stem + ".log.json"), checkpoint.with_name(checkpoint.stem + ".loss.png")


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def write_log(checkpoint: Path, config: dict[str, Any], losses: Sequence[float], vals: Sequence[Sequence[float]],
              seconds_per_step: float | None, device: torch.device) -> None:
    """Write the JSON log and the loss curve beside ``checkpoint``.

    The JSON is written to a temporary file first, so a reader never sees it half-written.
    Non-finite losses and PSNRs are written as null: standard JSON has no NaN or infinity.
    """
    json_path, png_path = log_paths(checkpoint)
    document = {
        "checkpoint": str(checkpoint),
        "step": len(losses),
        "config": config,
        "device": str(device),
        "seconds_per_step": seconds_per_step,
        "loss": [_finite_or_none(v) for v in losses],
        "val_psnr": [[int(s), _finite_or_none(float(p))] for s, p in vals],
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    temporary = json_path.with_name(json_path.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=1) + "\n")
    temporary.replace(json_path)
    plot_losses(png_path, losses, vals, config)


def plot_losses(path: Path, losses: Sequence[float], vals: Sequence[Sequence[float]], config: dict[str, Any]) -> None:
    """Draw the loss per step (and its running mean) with the validation PSNR on a second axis, to ``path``.

    Without matplotlib, warns and draws nothing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no loss curve at %s", path)
        return

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    steps = np.arange(1, len(losses) + 1)
    values = np.asarray(losses, dtype=np.float64)
    if len(values):
        ax.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=0.8, label="loss")
        window = max(1, len(values) // 100)
        if window > 1:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], smooth, color="tab:blue", linewidth=1.5, label=f"mean of {window}")
        if (values > 0).all():
            ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"{config['loss'].upper()} loss")
    ax.set_title(f"GPGMNet x{config['scale']}, batch {config['batch_size']}")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if vals:
        twin = ax.twinx()
        twin.plot([v[0] for v in vals], [v[1] for v in vals], "o-", color="tab:red", label="val PSNR")
        twin.set_ylabel("validation PSNR (dB)", color="tab:red")
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="best")
    fig.tight_layout()
    temporary = path.with_name(path.stem + ".tmp.png")
    fig.savefig(temporary)
    plt.close(fig)
    temporary.replace(path)


def _build_network(config: dict[str, Any]) -> tuple[GPGMNet, dict[str, Any]]:
    """A fresh GPGMNet for the run and the keyword arguments it was built from (saved with every checkpoint).

    A ``graded`` run conditions the network on every grading of :data:`gradings.NAMES`
    unless ``model.conventions`` says otherwise.
    """
    model_config = {"scale": config["scale"], **config["model"]}
    if config["graded"]:
        model_config.setdefault("conventions", len(gradings.NAMES))
    try:
        network = GPGMNet(**model_config)
    except (TypeError, ValueError) as error:
        raise TrainError(f"bad model settings {config['model']}: {error}") from None
    return network, model_config


def _restore_weights_and_history(
    network: GPGMNet, config: dict[str, Any], payload: dict[str, Any] | None
) -> tuple[int, list[float], list[list[Any]], list[list[Any]], float]:
    """Load the resumed checkpoint's weights (or the ``init`` checkpoint's) into ``network``.

    Returns:
        The step reached, the loss history, the validation (step, PSNR) history, the validation
        (step, PSNR by set) history and the best validation PSNR so far: all empty, 0 or -inf
        for a new run.
    """
    step, losses, vals = 0, [], []
    by_set_history: list[list[Any]] = []
    best = -math.inf
    if payload is not None:
        try:
            network.load_state_dict(payload["state_dict"])
        except (KeyError, RuntimeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"checkpoint {config['out']} does not fit GPGMNet: {first}") from None
        step = int(payload["step"])
        losses = [float(v) for v in payload.get("loss_history", [])][:step]
        vals = [list(v) for v in payload.get("val_history", [])]
        by_set_history = [list(v) for v in payload.get("val_by_set_history", [])]
        best = max((float(v[1]) for v in vals), default=-math.inf)
    elif config.get("init"):
        copied = initialise_from(network, Path(config["init"]))
        print(f"initialised {copied} tensors from {config['init']}", file=sys.stderr)
    return step, losses, vals, by_set_history, best


def _restore_optimizer_and_rng(optimizer: torch.optim.Optimizer, payload: dict[str, Any] | None,
                               device: torch.device) -> None:
    """When resuming, restore the Adam state and the torch RNG state (dropout/DropBlock) of the checkpoint."""
    if payload is None:
        return
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng_state"])
    if device.type == "cuda" and payload.get("cuda_rng_state") is not None:
        torch.cuda.set_rng_state(payload["cuda_rng_state"], device)


def _optimisation_step(network: GPGMNet, optimizer: torch.optim.Optimizer,
                       loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], lr: float,
                       lr_batch: torch.Tensor, hr_batch: torch.Tensor, grading_batch: torch.Tensor,
                       device: torch.device, dtype: torch.dtype | None) -> float:
    """One Adam step at learning rate ``lr`` on one batch; returns the batch's loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    inputs = lr_batch.to(device, non_blocking=True)
    if device.type == "cpu":
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    convention = convention_input(network, grading_batch)
    with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        prediction = network(inputs, convention, classical_input(network, lr_batch))
    loss = loss_fn(prediction.float(), hr_batch.to(device, non_blocking=True))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.item())


def _validate(network: GPGMNet, validation: Validation, device: torch.device, dtype: torch.dtype | None, step: int,
              vals: list[list[Any]], by_set_history: list[list[Any]]) -> tuple[float, dict[str, float]]:
    """Validate at ``step`` and append the result to both histories.

    Returns:
        The mean PSNR over the validation sets (what picks the best checkpoint) and the PSNR of each set.
    """
    by_set = validation_psnr_by_set(network, validation, device, dtype)
    psnr = float(np.mean(list(by_set.values())))
    vals.append([step, psnr])
    by_set_history.append([step, by_set])
    return psnr, by_set


def train(config: dict[str, Any], payload: dict[str, Any] | None = None, progress: bool = True) -> int:
    """Run (or continue) a training run; returns the exit status."""
    from tqdm import tqdm

    device = make_device(config["device"])
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    seed_everything(config["seed"])
    scale = config["scale"]
    network, model_config = _build_network(config)
    batches, validation = build_data(config, progress)

    step, losses, vals, by_set_history, best = _restore_weights_and_history(network, config, payload)
    network.to(device).train()
    if device.type == "cpu":
        # oneDNN's convolutions run about 25 % faster in NHWC on CPU; weights save the same.
        network.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        network.parameters(), lr=learning_rate(config, step), betas=tuple(config["adam_betas"]),
        weight_decay=config["weight_decay"],
    )
    _restore_optimizer_and_rng(optimizer, payload, device)
    out = Path(config["out"])
    best_out = out.with_name(out.stem + ".best" + out.suffix)
    total = config["iterations"]
    dtype = autocast_dtype(config, device)
    print(f"precision: {'bf16 autocast' if dtype else 'fp32'} ({config['precision']}; CPU bf16: {cpu_has_bf16()})",
          file=sys.stderr)
    loss_fn = F.mse_loss if config["loss"] == "l2" else F.l1_loss

    def save(path: Path = out) -> None:
        extra: dict[str, Any] = {
            "optimizer": optimizer.state_dict(),
            "train_config": config,
            "loss_history": losses,
            "val_history": vals,
            "val_by_set_history": by_set_history,
            "rng_state": torch.get_rng_state(),
        }
        if network.conventions:
            extra["conventions"] = list(gradings.NAMES[: network.conventions])
        if device.type == "cuda":
            extra["cuda_rng_state"] = torch.cuda.get_rng_state(device)
        save_checkpoint(path, network, model_config, step, **extra)
        write_log(out, config, losses, vals, seconds_per_step(), device)

    step_times: list[float] = []

    def seconds_per_step() -> float | None:
        return float(np.median(step_times)) if step_times else None

    if step >= total:
        print(f"{out}: already at step {step} of {total}; nothing to do", file=sys.stderr)
        write_log(out, config, losses, vals, None, device)
        return 0
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        sampler=range(step, total),
        num_workers=config["workers"],
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if config["workers"] else None,
        generator=torch.Generator().manual_seed(config["seed"]),  # keeps the global RNG untouched
        worker_init_fn=_leave_signals_to_the_trainer,
    )
    bar = tqdm(total=total, initial=step, disable=not progress, dynamic_ncols=True, desc=f"train x{scale}")
    postfix: dict[str, str] = {}
    if vals:
        postfix["val_psnr"] = f"{vals[-1][1]:.2f}"
    try:
        for lr_batch, hr_batch, grading_batch in loader:
            started = time.perf_counter()
            value = _optimisation_step(network, optimizer, loss_fn, learning_rate(config, step),
                                       lr_batch, hr_batch, grading_batch, device, dtype)
            step_times.append(time.perf_counter() - started)
            step += 1
            losses.append(value)
            if not math.isfinite(value):
                save()
                raise TrainError(f"the loss became {value} at step {step}; saved {out} for inspection")
            if step % config["val_every"] == 0 or step == total:
                psnr, by_set = _validate(network, validation, device, dtype, step, vals, by_set_history)
                postfix["val_psnr"] = f"{psnr:.2f}"
                if psnr > best:
                    best = psnr
                    save(best_out)
                log.info("step %d validation %s", step, json.dumps({k: round(v, 3) for k, v in by_set.items()}))
            postfix["loss"] = f"{value:.3e}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            if step % config["checkpoint_every"] == 0 or step == total:
                save()
            if _termination_requested:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        bar.close()
        save()
        print(f"interrupted: saved step {step} to {out}; continue with --resume {out}", file=sys.stderr)
        return 130
    bar.close()
    return 0


def initialise_from(network: GPGMNet, path: Path) -> int:
    """Copies the tensors of checkpoint ``path`` whose names and shapes match; returns how many.

    A matrix that only gained input columns (a modulation Linear of a
    network given conventions, fed from the paper's network) gets the
    source's columns and zeros for the new ones, so at the start the
    conditioned network computes exactly what the source did.
    """
    source = read_checkpoint(path)["state_dict"]
    target = network.state_dict()
    matching = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    for k, v in source.items():
        t = target.get(k)
        if t is not None and k not in matching and v.ndim == 2 and t.ndim == 2 and t.shape[0] == v.shape[0] \
                and t.shape[1] > v.shape[1]:
            widened = torch.zeros_like(t)
            widened[:, : v.shape[1]] = v
            matching[k] = widened
    if not matching:
        raise CheckpointError(f"checkpoint {path} shares no weights with this GPGMNet")
    network.load_state_dict(matching, strict=False)
    return len(matching)


_termination_requested = False


def _leave_signals_to_the_trainer(worker_id: int) -> None:
    """In each data-loading worker: ignore SIGTERM and SIGINT.

    A scheduler (``kill`` of the job's process group, Kubernetes, Ctrl-C in a
    terminal) signals every process of the job at once. Workers that died of it
    would crash the trainer before it saves; ignoring it, they are shut down by
    the trainer after the checkpoint, as for a run that ends normally.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _request_stop(signum: int, frame: object) -> None:
    # Schedulers and `kill` stop jobs with SIGTERM (and background jobs ignore
    # SIGINT). Raising here could interrupt tqdm or a checkpoint write half-way,
    # so the loop stops at the next step boundary instead, as after Ctrl-C.
    global _termination_requested
    _termination_requested = True


def main(argv: Sequence[str] | None = None) -> int:
    """``sritm train``: parse the command line and run :func:`train`.

    Returns:
        0; 2 on a bad setting, data or checkpoint (one ``error:`` line); 130 on Ctrl-C/SIGTERM.
    """
    args = build_parser().parse_args(argv)
    # The handlers are the process's again afterwards: torch's DataLoader leaves a Python SIGCHLD handler
    # behind for good, and a process that goes on (a notebook, the test suite) would then run it at every
    # later child's exit. The suite's process was seen to die of SIGSEGV (si_code SI_KERNEL, at an arbitrary
    # instruction) on such a delivery, after bf16 training on an AMX Xeon.
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGCHLD)}
    signal.signal(signal.SIGTERM, _request_stop)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    try:
        config, payload = resolve_config(args)
        return train(config, payload, progress=not args.quiet)
    except (CheckpointError, data.DataError, TrainError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())

"""Training and evaluation data: SDR/HDR10 pairs formed from HDR masters, and Kim et al.'s 4K HDR dataset.

Pairs from scene-linear HDR images (EXR, Radiance .hdr)
=======================================================
Every colour step calls :mod:`sritm_core.colour`; nothing here re-implements a
transfer function or a matrix. :func:`form_pair` does, per image:

1. **Read** scene-linear RGB (:func:`read_scene`). Primaries are BT.709
   unless the file says otherwise: an EXR ``chromaticities`` attribute or a
   Radiance ``PRIMARIES=`` line equal to BT.709 (D65, or its Bradford D50
   adaptation that Photoshop writes), BT.2020, or absent/all-zero. Other
   primaries are refused (the scene is skipped with a warning). NaN becomes
   0 and +inf the largest finite value. An equirectangular image (width ==
   2 x height) keeps only its central latitude band, the middle half of the
   rows, where the projection is least stretched.
2. **Exposure** (:func:`exposure_gain`): the image is treated as display
   light in cd/m^2 after one gain. The gain puts the log-average luminance
   ``exp(mean(log(max(Y, floor))))`` at 26 cd/m^2 (BT.2408's 18 % grey);
   ``floor`` = 1e-4 x the 99.5th percentile of Y (Reinhard's delta, made
   relative so the rule does not depend on the file's arbitrary scale). If
   that gain would put the 99.5th percentile of Y above 4000 cd/m^2, the gain
   puts it at 4000 instead. Training multiplies the gain by 2^U(-1, 1)
   (:func:`exposure_jitters`); validation and evaluation never jitter.
3. **HDR10 master** = the ground truth (:func:`hdr10_master`): negatives
   clipped after BT.709 -> BT.2020 (linear), PQ inverse EOTF, then the
   BT.2390 EETF per R'G'B' channel from the content's peak (the largest
   linear BT.2020 component, clamped to [1000, 10000] cd/m^2, i.e. the
   MaxCLL a mastering display would need) to a 1000 cd/m^2 display, then
   10-bit narrow-range BT.2020 Y'CbCr, 4:4:4 (rounded and clamped to legal).
4. **SDR grade** (:func:`sdr_grade`), derived from the quantised master (so
   from exactly what the HDR10 file holds): BT.2446-1 Method A (1000 ->
   100 cd/m^2), BT.1886 decode (100 cd/m^2 white, 0 black), BT.2020 ->
   BT.709 with clipping to [0, 100] cd/m^2, BT.1886 encode, 8-bit
   narrow-range BT.709 Y'CbCr 4:4:4.
5. **LR input** (:func:`lr_frame`): the 8-bit SDR Y'CbCr **codes** (not
   R'G'B') are down-scaled by bicubic x1/s with antialiasing, MATLAB
   ``imresize`` style (:func:`imresize_down`), as Kim et al. made their LR
   frames (``imresize`` on the YUV frame) and as a video scaler works on
   decoded Y'CbCr planes; then the chroma is averaged to 4:2:0 (centre
   siting, the colour module's convention) and every plane is rounded to
   8-bit legal codes: an 8-bit I420 frame, what a client sends. The network
   input is that frame through :func:`sritm_serving.processing.network_input_from_i420`,
   the served pre-processor. Down-scaling always acts on Y'CbCr codes:
   here, in the validation set, in evaluation; the bicubic baseline and the
   network's own skip also up-scale Y'CbCr codes.

The HR image is first centre-cropped so both sides are multiples of 2s (the
LR frame then has even sides, as I420 needs). LR crops start at even LR
coordinates, so a crop of the LR frame is itself a valid I420 frame with the
same 4:2:0 block structure, and the HR crop starts at s times that offset:
HR pixel (s y, s x) .. (s y + s - 1, s x + s - 1) is the footprint of LR pixel
(y, x) (MATLAB's half-pixel-centre geometry).

Caches: the formed pairs are cached as ``.npz`` files keyed by the formation
version, a hash of the code that forms them (this module, ``colour``,
``serving``), the source file's name, size and mtime, the scale, the exposure
jitter and the crop, so a changed image or formation code is never served stale. Training
pre-computes ``exposure_variants`` jittered pairs per scene
(``<cache>/train_x{s}``); the fixed validation set is a centre crop (at most
``crop`` x ``crop`` HR pixels) per validation scene (``<cache>/val_x{s}``);
the default cache root is ``~/.cache/sritm``.

Kim et al.'s 4K HDR dataset
===========================
MATLAB v7.3 (HDF5) files holding ``[H, W, 3, N]`` YUV 4:4:4 arrays (h5py sees
``[N, 3, W, H]``): SDR 8-bit codes (network input = codes / 255), HDR 10-bit
codes (target = codes / 1023). Training: ``SDR_youtube_80.mat`` (x2) or
``SDR_youtube_80_x4.mat`` (x4), key ``SDR_data``, with ``HDR_youtube_80.mat``,
key ``HDR_data``; the last 500 patches are the validation set. Test:
``testset_SDR_x{2,4}.mat`` (key ``SDR_YUV``) and ``testset_HDR.mat`` (key
``HDR_YUV``). See :class:`KimPairs`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # before any EXR is read

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from gpgmnet import degrade, gradings  # noqa: E402
from sritm_core import colour  # noqa: E402
from sritm_core.contract import HDR_CODE_SCALE, SDR_CODE_SCALE, check_scale  # noqa: E402
from sritm_serving import processing  # noqa: E402

log = logging.getLogger(__name__)

FORMATION_VERSION = 1
"""Bump when anything in the formation changes: every cached pair is then re-formed."""

IMAGE_SUFFIXES = (".exr", ".hdr")
LOG_AVERAGE_TARGET_CD_M2 = 26.0
"""BT.2408 section 2.1: 18 % grey of HDR Reference White (203 cd/m^2) is 26 cd/m^2."""
HIGHLIGHT_PERCENTILE = 99.5
HIGHLIGHT_CAP_CD_M2 = 4000.0
LOG_AVERAGE_FLOOR = 1e-4
"""Relative to the 99.5th percentile: darker pixels count as this in the log-average."""
HDR_PEAK_CD_M2 = 1000.0
SDR_PEAK_CD_M2 = 100.0
JITTER_STOPS = 1.0
"""Training exposure jitter: gain x 2^U(-JITTER_STOPS, JITTER_STOPS)."""
DEFAULT_CACHE_ROOT = Path("~/.cache/sritm")
DEFAULT_VALIDATION_CROP = 480
SPLIT_FILE = Path(__file__).resolve().parent / "splits" / "hdr_scenes.json"

KIM_VALIDATION_PATCHES = 500


class DataError(ValueError):
    """Data that cannot be used; the message is one line naming the file or folder and the problem."""


# --------------------------------------------------------------------------
# reading


_PRIMARIES = {
    # (rx, ry, gx, gy, bx, by, wx, wy)
    "bt709": (0.640, 0.330, 0.300, 0.600, 0.150, 0.060, 0.3127, 0.3290),
    # BT.709/sRGB colorants chromatically adapted (Bradford) to D50, as written by
    # Photoshop and ICC workflows: the same colours as BT.709, expressed with a D50 white.
    "bt709-d50": (0.6484, 0.3309, 0.3212, 0.5979, 0.1559, 0.0660, 0.3457, 0.3585),
    "bt2020": (0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290),
    # Radiance's documented default, written by tools that mean "unspecified".
    "radiance-default": (0.640, 0.330, 0.290, 0.600, 0.150, 0.060, 0.3333, 0.3333),
}
_PRIMARIES_MEANING = {"bt709": "bt709", "bt709-d50": "bt709", "bt2020": "bt2020", "radiance-default": "bt709"}
_PRIMARIES_TOLERANCE = 2e-3


def _exr_chromaticities(path: Path) -> tuple[float, ...] | None:
    """The ``chromaticities`` attribute of an EXR header, or None (OpenCV does not expose it)."""
    with path.open("rb") as f:
        data = f.read(1 << 16)
    if data[:4] != b"\x76\x2f\x31\x01":
        return None
    pos = 8
    try:
        while True:
            end = data.index(b"\0", pos)
            name = data[pos:end]
            pos = end + 1
            if not name:
                return None
            end = data.index(b"\0", pos)
            kind = data[pos:end]
            pos = end + 1
            (size,) = struct.unpack_from("<i", data, pos)
            pos += 4
            if name == b"chromaticities" and kind == b"chromaticities" and size == 32:
                return tuple(float(v) for v in struct.unpack_from("<8f", data, pos))
            pos += size
    except (ValueError, struct.error):
        return None  # header longer than what was read, or malformed: OpenCV will judge


def _radiance_primaries(path: Path) -> tuple[float, ...] | None:
    with path.open("rb") as f:
        header = f.read(4096).split(b"\n\n", 1)[0]
    for line in header.splitlines():
        if line.startswith(b"PRIMARIES="):
            try:
                values = tuple(float(v) for v in line.split(b"=", 1)[1].split())
            except ValueError:
                return None
            return values if len(values) == 8 and any(values) else None  # all zeros: unspecified
    return None


def file_primaries(path: Path) -> str:
    """``"bt709"`` or ``"bt2020"``: the primaries an image file declares (BT.709 when it declares none).

    Raises:
        DataError: the file declares primaries this module cannot convert.
    """
    suffix = path.suffix.lower()
    found = _exr_chromaticities(path) if suffix == ".exr" else _radiance_primaries(path)
    if found is None:
        return "bt709"
    for name, reference in _PRIMARIES.items():
        if max(abs(a - b) for a, b in zip(found, reference)) <= _PRIMARIES_TOLERANCE:
            return _PRIMARIES_MEANING[name]
    shown = " ".join(f"{v:.4f}" for v in found)
    raise DataError(f"{path}: unsupported primaries/white ({shown}); only BT.709 and BT.2020 are handled")


@dataclass(frozen=True)
class Scene:
    """A scene-linear HDR image as read: H x W x 3 float32 RGB (relative radiance)."""

    name: str
    path: Path
    rgb: NDArray[np.float32]
    primaries: str  # "bt709" | "bt2020"


def central_band(rgb: NDArray[Any]) -> NDArray[Any]:
    """The middle half of the rows of an equirectangular (2:1) image; other images unchanged."""
    height, width = rgb.shape[:2]
    if width != 2 * height:
        return rgb
    top = height // 4
    return rgb[top : top + height // 2]


def read_scene(path: Path) -> Scene:
    """Read one EXR/.hdr file as scene-linear RGB (equirectangular images cut to their central band).

    Raises:
        DataError: missing, undecodable, not 3-channel colour, no light at all,
            or primaries that cannot be handled.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    primaries = file_primaries(path)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{path}: cannot be decoded as an EXR/Radiance HDR image")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DataError(f"{path}: expected an RGB image, got shape {image.shape}")
    rgb = np.ascontiguousarray(image[..., 2::-1], dtype=np.float32)  # BGR(A) -> RGB
    finite = np.isfinite(rgb)
    if not finite.all():
        top = float(rgb[finite].max()) if finite.any() else 0.0
        rgb = np.nan_to_num(rgb, nan=0.0, posinf=top, neginf=0.0)
    rgb = np.ascontiguousarray(central_band(rgb))
    if not (rgb > 0).any():
        raise DataError(f"{path}: the image holds no light (all pixels <= 0)")
    return Scene(name=path.stem, path=path, rgb=rgb, primaries=primaries)


def scene_files(scenes_dir: Path) -> list[Path]:
    """The HDR image files (.exr, .hdr) of a folder, sorted by name.

    Raises:
        DataError: the folder does not exist or holds no such file.
    """
    scenes_dir = Path(scenes_dir)
    if not scenes_dir.is_dir():
        raise DataError(f"scene folder {scenes_dir} does not exist")
    files = sorted(p for p in scenes_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"scene folder {scenes_dir} holds no HDR images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def load_scenes(paths: Iterable[Path]) -> list[Scene]:
    """Read every image; an unreadable one is skipped with a warning that names it.

    Raises:
        DataError: not one image could be read.
    """
    paths = list(paths)
    scenes = []
    for path in paths:
        try:
            scenes.append(read_scene(path))
        except DataError as error:
            log.warning("skipping %s", error)
    if not scenes:
        where = sorted({str(Path(p).parent) for p in paths}) or ["(no files)"]
        raise DataError(f"no readable HDR images among {len(paths)} file(s) in {', '.join(where)}")
    return scenes


# --------------------------------------------------------------------------
# splits


def load_split(split_file: Path = SPLIT_FILE) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` scene names (file stems) from a split file.

    Raises:
        DataError: missing/invalid file, or a scene listed in both parts.
    """
    split_file = Path(split_file)
    try:
        raw = json.loads(split_file.read_text())
        split = {part: [str(n) for n in raw[part]] for part in ("train", "val")}
    except FileNotFoundError:
        raise DataError(f"split file {split_file} does not exist") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"split file {split_file} is not a {{'train': [...], 'val': [...]}} JSON ({error})") from None
    both = sorted(set(split["train"]) & set(split["val"]))
    if both:
        raise DataError(f"split file {split_file} lists {', '.join(both)} in both train and val")
    return split


def split_files(scenes_dir: Path, part: str, split_file: Path = SPLIT_FILE) -> list[Path]:
    """The image files of ``scenes_dir`` that the split puts in ``part`` ("train", "val" or "all").

    Files the split does not mention are left out (with a warning).

    Raises:
        DataError: no such folder or images, or none of them in ``part``.
    """
    files = scene_files(scenes_dir)
    if part == "all":
        return files
    if part not in ("train", "val"):
        raise DataError(f"split part must be train, val or all, not {part!r}")
    split = load_split(split_file)
    listed = set(split["train"]) | set(split["val"])
    unlisted = [p.name for p in files if p.stem not in listed]
    if unlisted:
        log.warning("%d image(s) in %s are in neither part of %s, ignored: %s", len(unlisted), scenes_dir,
                    split_file, ", ".join(unlisted))
    chosen = [p for p in files if p.stem in set(split[part])]
    if not chosen:
        raise DataError(f"none of the images in {scenes_dir} is in the {part} part of {split_file}")
    return chosen


# --------------------------------------------------------------------------
# formation


def _coefficients(primaries: str) -> colour.YCbCrCoefficients:
    return colour.BT2020 if primaries == "bt2020" else colour.BT709


def luminance(rgb_linear: NDArray[Any], primaries: str = "bt709") -> NDArray[np.float64]:
    """Relative luminance Y of linear RGB (the Y row of the primaries' RGB->XYZ matrix: kr, kg, kb)."""
    c = _coefficients(primaries)
    weights = np.array([c.kr, c.kg, c.kb], dtype=np.float64)
    return np.asarray(rgb_linear, dtype=np.float64) @ weights


def exposure_gain(rgb_linear: NDArray[Any], primaries: str = "bt709") -> float:
    """The gain that turns relative radiance into cd/m^2 (see the module notes, step 2)."""
    y = np.maximum(luminance(rgb_linear, primaries), 0.0).ravel()
    high = float(np.percentile(y, HIGHLIGHT_PERCENTILE))
    if not high > 0.0:
        high = float(y.max())
    if not high > 0.0:
        raise DataError("the image holds no light")
    log_average = math.exp(float(np.mean(np.log(np.maximum(y, LOG_AVERAGE_FLOOR * high)))))
    gain = LOG_AVERAGE_TARGET_CD_M2 / log_average
    if gain * high > HIGHLIGHT_CAP_CD_M2:
        gain = HIGHLIGHT_CAP_CD_M2 / high
    return gain


def exposure_jitters(name: str, seed: int, count: int) -> NDArray[np.float64]:
    """``count`` training exposure factors 2^U(-1, 1) for a scene, fixed by (seed, scene name)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return np.asarray(2.0 ** rng.uniform(-JITTER_STOPS, JITTER_STOPS, count))


def crop_to_multiple(image: NDArray[Any], multiple: int) -> NDArray[Any]:
    """Centre crop so that height and width are multiples of ``multiple``."""
    height, width = image.shape[:2]
    h, w = height - height % multiple, width - width % multiple
    top, left = (height - h) // 2, (width - w) // 2
    return image[top : top + h, left : left + w]


def hdr10_master(rgb_cd_m2: NDArray[Any], primaries: str = "bt709") -> NDArray[np.uint16]:
    """Linear light in cd/m^2 -> the HDR10 master: 10-bit narrow-range BT.2020 PQ Y'CbCr 4:4:4 codes.

    BT.709 -> BT.2020 (linear; skipped for BT.2020 sources), negatives clipped,
    PQ, BT.2390 EETF per channel from the content peak (clamped to
    [1000, 10000] cd/m^2) to 1000 cd/m^2, Y'CbCr, rounding to legal codes.
    """
    rgb = np.asarray(rgb_cd_m2, dtype=np.float32)
    linear = colour.bt709_to_bt2020(rgb) if primaries == "bt709" else rgb
    linear = np.maximum(linear, 0.0)
    source_peak = float(np.clip(linear.max(), HDR_PEAK_CD_M2, colour.PQ_PEAK_CD_M2))
    pq = colour.pq_inverse_eotf(linear)
    if source_peak > HDR_PEAK_CD_M2:
        pq = colour.bt2390_eetf(pq, source_peak=source_peak, target_peak=HDR_PEAK_CD_M2)
    codes = colour.rgb_to_codes(pq, colour.BT2020, 10)
    return colour.quantize_narrow_range(codes, 10).astype(np.uint16)


def sdr_grade(hdr_codes: NDArray[np.integer[Any]], grading: str = gradings.DEFAULT,
              variation: gradings.GradingVariation = gradings.NO_VARIATION) -> NDArray[np.uint8]:
    """HDR10 master codes -> the SDR grade: 8-bit narrow-range BT.709 (BT.1886) Y'CbCr 4:4:4 codes.

    ``grading`` names one of :data:`gpgmnet.gradings.GRADINGS` (default: BT.2446-1 Method A).
    """
    return gradings.grade(hdr_codes, grading, variation)


def imresize_down(image: NDArray[Any], scale: int) -> NDArray[Any]:
    """Down-scale H x W x C by an integer factor: MATLAB ``imresize(x, 1/scale)`` (bicubic, antialiased).

    MATLAB's default: Keys cubic with a = -0.5, the kernel stretched by
    ``scale`` (antialiasing), weights normalised to sum to one, output pixel
    u at input coordinate ``scale (u + 1/2) - 1/2`` (0-based), out-of-range
    taps mirrored with edge repetition ("symmetric"). PyTorch's
    ``interpolate(mode="bicubic", antialias=True, align_corners=False)`` uses
    the same a = -0.5 kernel, stretch, normalisation and geometry but drops
    (and renormalises) out-of-range taps instead of mirroring them; padding
    the input symmetrically by 3 x scale pixels (more than the kernel's
    2 x scale radius, and a multiple of the scale so the grid stays aligned)
    and cropping 3 output pixels per side makes the borders equal too
    (``tests/test_data.py`` checks it against a direct implementation).

    Args:
        image: H x W x C float array, H and W multiples of ``scale``.
        scale: integer factor >= 1.

    Returns:
        (H/scale) x (W/scale) x C array, float dtype of the input (float32
        unless the input is float64), unclipped.
    """
    a = np.asarray(image)
    dtype = np.float64 if a.dtype == np.float64 else np.float32
    height, width = a.shape[:2]
    if scale == 1:
        return a.astype(dtype)
    if height % scale or width % scale:
        raise ValueError(f"{height}x{width} is not a multiple of the scale {scale}")
    pad = 3 * scale
    padded = np.pad(a.astype(dtype), ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    tensor = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None]
    out_h, out_w = padded.shape[0] // scale, padded.shape[1] // scale
    resized = F.interpolate(tensor, size=(out_h, out_w), mode="bicubic", antialias=True, align_corners=False)
    out = resized[0, :, 3:-3, 3:-3].numpy().transpose(1, 2, 0)
    return np.ascontiguousarray(out)


def lr_frame(sdr_codes: NDArray[np.uint8], scale: int) -> NDArray[np.uint8]:
    """HR SDR 4:4:4 codes -> the LR 8-bit I420 frame (down-scale on codes, 4:2:0, rounding to legal)."""
    small = imresize_down(sdr_codes.astype(np.float32), scale)
    return colour.quantize_i420(small, 8).astype(np.uint8, copy=False)


def network_input(i420: NDArray[np.uint8]) -> NDArray[np.float32]:
    """An 8-bit I420 frame as GPGMNet's 3 x h x w input (codes / 255): the served pre-processor."""
    return processing.network_input_from_i420(i420)[0]


def hdr_target(hdr_codes: NDArray[np.integer[Any]]) -> NDArray[np.float32]:
    """HR HDR10 4:4:4 codes (H x W x 3) as GPGMNet's 3 x H x W target (codes / 1023)."""
    return np.ascontiguousarray(hdr_codes.transpose(2, 0, 1), dtype=np.float32) / np.float32(HDR_CODE_SCALE)


@dataclass(frozen=True)
class FormedPair:
    """One formed training/evaluation pair (see the module notes)."""

    name: str
    scale: int
    gain: float  # cd/m^2 per unit of the file's radiance (jitter included)
    hdr_codes: NDArray[np.uint16]  # H x W x 3, 10-bit narrow BT.2020 PQ Y'CbCr 4:4:4: the ground truth
    sdr_codes: NDArray[np.uint8] | None  # H x W x 3, 8-bit narrow BT.709 Y'CbCr 4:4:4 (None when loaded from a cache)
    lr_i420: NDArray[np.uint8]  # (3h/2) x w, h = H/s, w = W/s
    grading: str = gradings.DEFAULT  # how the SDR was graded (gpgmnet.gradings)
    degradation: str = ""  # the codec round trip the LR frame went through ("" for none)

    @property
    def lr_size(self) -> tuple[int, int]:
        """(h, w) of the LR frame: the HR size divided by the scale."""
        h, w = self.hdr_codes.shape[:2]
        return h // self.scale, w // self.scale

    def network_input(self) -> NDArray[np.float32]:
        """3 x h x w float32, 8-bit codes / 255."""
        return network_input(self.lr_i420)

    def target(self) -> NDArray[np.float32]:
        """3 x H x W float32, 10-bit codes / 1023."""
        return hdr_target(self.hdr_codes)

    def crop(self, top: int, left: int, height: int, width: int) -> FormedPair:
        """The pair cut to an LR window (``top``/``left`` even) and the HR window it covers."""
        h, w = self.lr_size
        if top % 2 or left % 2 or height % 2 or width % 2:
            raise ValueError("LR crops must have even offsets and sizes (4:2:0 blocks)")
        if not (0 <= top and top + height <= h and 0 <= left and left + width <= w):
            raise ValueError(f"crop {height}x{width}+{top}+{left} is outside the {h}x{w} LR frame")
        y, u, v = colour.unpack_i420(self.lr_i420)
        lr = colour.pack_i420(
            y[top : top + height, left : left + width],
            u[top // 2 : (top + height) // 2, left // 2 : (left + width) // 2],
            v[top // 2 : (top + height) // 2, left // 2 : (left + width) // 2],
        )
        s = self.scale
        window = (slice(s * top, s * (top + height)), slice(s * left, s * (left + width)))
        return FormedPair(
            name=self.name,
            scale=s,
            gain=self.gain,
            hdr_codes=np.ascontiguousarray(self.hdr_codes[window]),
            sdr_codes=None if self.sdr_codes is None else np.ascontiguousarray(self.sdr_codes[window]),
            lr_i420=lr,
            grading=self.grading,
            degradation=self.degradation,
        )

    def center_crop(self, size: int) -> FormedPair:
        """The centre crop of at most ``size`` x ``size`` HR pixels (0: the whole pair)."""
        h, w = self.lr_size
        if size <= 0:
            return self
        side = max(2, (size // self.scale) // 2 * 2)
        ch, cw = min(h, side), min(w, side)
        top, left = (h - ch) // 4 * 2, (w - cw) // 4 * 2
        return self.crop(top, left, ch, cw)


def form_pair(scene: Scene, scale: int, jitter: float = 1.0, grading: str = gradings.DEFAULT) -> FormedPair:
    """Form the (HDR10 master, SDR grade, LR I420) pair of a scene (the module notes, steps 2-5)."""
    check_scale(scale)
    rgb = crop_to_multiple(scene.rgb, 2 * scale)
    if rgb.shape[0] < 2 * scale or rgb.shape[1] < 2 * scale:
        raise DataError(f"{scene.path}: {scene.rgb.shape[0]}x{scene.rgb.shape[1]} is too small for x{scale}")
    gain = exposure_gain(scene.rgb, scene.primaries) * jitter
    hdr = hdr10_master(rgb * np.float32(gain), scene.primaries)
    sdr = sdr_grade(hdr, grading)
    return FormedPair(name=scene.name, scale=scale, gain=gain, hdr_codes=hdr, sdr_codes=sdr,
                      lr_i420=lr_frame(sdr, scale), grading=grading)


# --------------------------------------------------------------------------
# caches


def cache_root(cache_dir: Path | str | None) -> Path:
    """The cache folder: ``cache_dir`` (``~`` expanded), or :data:`DEFAULT_CACHE_ROOT` when None."""
    return Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_ROOT).expanduser()


def _code_fingerprint() -> str:
    """A hash of the modules that form pairs: any edit to them invalidates every cached pair."""
    digest = hashlib.sha1()
    for module in (colour, processing, gradings, degrade):
        digest.update(Path(str(module.__file__)).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


_CODE_FINGERPRINT = _code_fingerprint()


def _cache_key(path: Path, **fields: Any) -> str:
    stat = path.stat()
    return json.dumps(
        {"version": FORMATION_VERSION, "code": _CODE_FINGERPRINT, "file": path.name, "size": stat.st_size,
         "mtime_ns": stat.st_mtime_ns, **fields},
        sort_keys=True,
    )


def _cache_load(file: Path, key: str) -> FormedPair | None:
    try:
        with np.load(file, allow_pickle=False) as archive:
            if str(archive["key"]) != key:
                return None
            return FormedPair(
                name=str(archive["name"]),
                scale=int(archive["scale"]),
                gain=float(archive["gain"]),
                hdr_codes=archive["hdr_codes"],
                sdr_codes=None,
                lr_i420=archive["lr_i420"],
                grading=str(archive["grading"]),
                degradation=str(archive["degradation"]),
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _cache_save(file: Path, key: str, pair: FormedPair) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    temporary = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as f:
        np.savez(f, key=np.array(key), name=np.array(pair.name), scale=np.array(pair.scale),
                 gain=np.array(pair.gain), hdr_codes=pair.hdr_codes, lr_i420=pair.lr_i420,
                 grading=np.array(pair.grading), degradation=np.array(pair.degradation))
    temporary.replace(file)  # atomic: a reader never sees half a file


def formed_pairs(
    paths: Sequence[Path],
    scale: int,
    variants: int = 0,
    crop: int = 0,
    cache_dir: Path | None = None,
    seed: int = 0,
    progress: bool = False,
    grading: str = gradings.DEFAULT,
    compressed: bool = False,
) -> list[list[FormedPair]]:
    """Formed pairs for each readable image: ``variants`` jittered ones (training) or one unjittered.

    Args:
        paths: image files.
        scale: 2 or 4.
        variants: 0 for one unjittered pair per image (validation,
            evaluation); otherwise that many pairs with the exposure factors
            :func:`exposure_jitters` ``(name, seed, variants)``.
        crop: centre crop of each pair (HR side bound); 0 for the whole image.
        cache_dir: a folder for the ``.npz`` cache, or None for none.
        seed: jitter seed.
        progress: show a tqdm bar.
        grading: the SDR grading (:data:`gpgmnet.gradings.NAMES`), without variation.
        compressed: put each (cropped) LR frame through :func:`gpgmnet.degrade.h264` at CRF 28.

    Returns:
        One list of pairs per readable image, in the order of ``paths``
        (unreadable or too small images are skipped with a warning).

    Raises:
        DataError: no image could be used.
    """
    from tqdm import tqdm

    paths = [Path(p) for p in paths]
    out: list[list[FormedPair]] = []
    for path in tqdm(paths, desc=f"forming x{scale} pairs", disable=not progress, leave=False):
        factors = [1.0] if variants == 0 else [float(f) for f in exposure_jitters(path.stem, seed, variants)]
        try:
            keys = [_cache_key(path, scale=scale, jitter=repr(f), crop=crop, grading=grading, compressed=compressed)
                    for f in factors]
        except OSError:
            log.warning("skipping %s: no such image file", path)
            continue
        tag = f"{grading}{'.h264' if compressed else ''}"
        files = [None if cache_dir is None else cache_dir / f"{path.name}.{tag}.{i}.npz" for i in range(len(factors))]
        pairs = [None if file is None else _cache_load(file, key) for file, key in zip(files, keys)]
        if any(pair is None for pair in pairs):
            try:
                scene = read_scene(path)
                for index, factor in enumerate(factors):
                    if pairs[index] is None:
                        pair = form_pair(scene, scale, factor, grading).center_crop(crop)
                        if compressed:
                            pair = dataclasses.replace(pair, lr_i420=degrade.h264(pair.lr_i420),
                                                       degradation=f"libx264 crf {degrade.VALIDATION_CRF}")
                        file = files[index]
                        if file is not None:
                            _cache_save(file, keys[index], pair)
                        pairs[index] = pair
            except DataError as error:
                log.warning("skipping %s", error)
                continue
        out.append([pair for pair in pairs if pair is not None])
    if not out:
        where = sorted({str(p.parent) for p in paths}) or ["(no files)"]
        raise DataError(f"no readable HDR images among {len(paths)} file(s) in {', '.join(where)}")
    return out


# --------------------------------------------------------------------------
# graded, codec-degraded training renditions

GRADING_DRAWS = 2
"""LR renditions per (exposure variant, grading): the first clean, the second through a real codec."""
DEGRADED_FRACTION = 0.5
"""Of the training LR renditions, the fraction that went through a codec round trip (``gpgmnet.degrade``)."""
STANDARD_FRACTION = 0.5
"""Of the training renditions, the share graded exactly by the standard (no exposure, saturation or black variation).

A varied rendition has the same HDR target as the standard one, so its
input alone cannot say which variation was applied: trained on variations
only, the network learns to second-guess every input's exposure, and loses
on SDR graded by the book (2 dB on ``bt2446a``, and ``bt2408`` no better than
the classical conversion, in the first conditioned run). Half of the draws
are graded by the book, independently of the codec round trip.
"""


def graded_renditions(master: FormedPair, rng: np.random.Generator,
                      names: Sequence[str] = gradings.NAMES) -> list[FormedPair]:
    """Every grading of a formed master, ``GRADING_DRAWS`` times each with its own variation; half codec-degraded.

    All renditions share the master's HDR codes (the ground truth); each has
    its own grading: by the standard with probability :data:`STANDARD_FRACTION`,
    else randomised (:func:`gpgmnet.gradings.random_variation`); the odd
    draws also get a random codec round trip (:func:`gpgmnet.degrade.random_degradation`).
    """
    out = []
    for name in names:
        for draw in range(GRADING_DRAWS):
            varied = rng.random() >= STANDARD_FRACTION
            variation = gradings.random_variation(rng) if varied else gradings.NO_VARIATION
            sdr = sdr_grade(master.hdr_codes, name, variation)
            lr = lr_frame(sdr, master.scale)
            degradation = ""
            if draw % 2 == 1:
                chosen = degrade.random_degradation(rng)
                lr, degradation = chosen.apply(lr), str(chosen)
            out.append(FormedPair(master.name, master.scale, master.gain, master.hdr_codes, None, lr, name,
                                  degradation))
    return out


def _renditions_load(file: Path, key: str) -> list[FormedPair] | None:
    try:
        with np.load(file, allow_pickle=False) as archive:
            if str(archive["key"]) != key:
                return None
            masters, lrs = archive["masters"], archive["lr"]
            name, scale, gains = str(archive["name"]), int(archive["scale"]), archive["gains"]
            return [
                FormedPair(name, scale, float(gains[m]), masters[m], None, lrs[i], str(g), str(d))
                for i, (m, g, d) in enumerate(zip(archive["master_index"], archive["grading"], archive["degradation"]))
            ]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _renditions_save(file: Path, key: str, masters: Sequence[FormedPair], renditions: Sequence[FormedPair]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    index = {id(m.hdr_codes): i for i, m in enumerate(masters)}
    temporary = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as f:
        np.savez(f, key=np.array(key), name=np.array(masters[0].name), scale=np.array(masters[0].scale),
                 gains=np.array([m.gain for m in masters]), masters=np.stack([m.hdr_codes for m in masters]),
                 lr=np.stack([r.lr_i420 for r in renditions]),
                 master_index=np.array([index[id(r.hdr_codes)] for r in renditions]),
                 grading=np.array([r.grading for r in renditions]),
                 degradation=np.array([r.degradation for r in renditions]))
    temporary.replace(file)


def graded_training_pairs(paths: Sequence[Path], scale: int, variants: int, cache_dir: Path | None = None,
                          seed: int = 0, progress: bool = False) -> list[list[FormedPair]]:
    """Per readable image: its ``variants`` exposure-jittered masters in every grading (:func:`graded_renditions`).

    Cached per image in ``cache_dir`` (keyed like :func:`formed_pairs`, plus
    the grading names and draws), so the codecs run once per formation.
    """
    from tqdm import tqdm

    out: list[list[FormedPair]] = []
    for path in tqdm([Path(p) for p in paths], desc=f"grading x{scale} renditions", disable=not progress, leave=False):
        try:
            key = _cache_key(path, scale=scale, seed=seed, variants=variants, gradings=list(gradings.NAMES),
                             draws=GRADING_DRAWS)
        except OSError:
            log.warning("skipping %s: no such image file", path)
            continue
        file = None if cache_dir is None else cache_dir / f"{path.name}.graded.npz"
        renditions = None if file is None else _renditions_load(file, key)
        if renditions is None:
            try:
                scene = read_scene(path)
                masters = [form_pair(scene, scale, float(f)) for f in exposure_jitters(path.stem, seed, variants)]
            except DataError as error:
                log.warning("skipping %s", error)
                continue
            rng = np.random.default_rng([seed, zlib.crc32(path.stem.encode()), scale])
            renditions = [r for m in masters for r in graded_renditions(m, rng)]
            if file is not None:
                _renditions_save(file, key, masters, renditions)
        out.append(renditions)
    if not out:
        raise DataError(f"no readable HDR images among {len(paths)} file(s)")
    return out


# --------------------------------------------------------------------------
# validation set


@dataclass(frozen=True)
class ValidationSample:
    """One fixed validation/evaluation crop: network input and target, both 1 x 3 x h x w float32."""

    name: str
    gain: float
    lr: NDArray[np.float32]  # 1 x 3 x h x w, codes / 255
    hr: NDArray[np.float32]  # 1 x 3 x H x W, codes / 1023
    grading: str = gradings.DEFAULT
    compressed: bool = False


def render_validation_set(
    paths: Sequence[Path],
    scale: int,
    crop: int = DEFAULT_VALIDATION_CROP,
    cache_dir: Path | str | None = None,
    use_cache: bool = True,
    grading: str = gradings.DEFAULT,
    compressed: bool = False,
) -> list[ValidationSample]:
    """The fixed (unjittered, centre-cropped) validation pairs, rendered to ``<cache>/val_x{s}`` once.

    ``grading`` picks the SDR grading; ``compressed`` gives the H.264 CRF 28 twin.

    Raises:
        DataError: no image could be read.
    """
    folder = cache_root(cache_dir) / f"val_x{scale}" if use_cache else None
    samples = []
    for (pair,) in formed_pairs(paths, scale, 0, crop=crop, cache_dir=folder, grading=grading, compressed=compressed):
        samples.append(ValidationSample(pair.name, pair.gain, pair.network_input()[None], pair.target()[None],
                                        grading, compressed))
    return samples


# --------------------------------------------------------------------------
# training batches


@dataclass(frozen=True)
class PatchRef:
    """Where one training patch comes from: pair (scene, variant), LR offset, flips."""

    scene: int
    variant: int
    top: int  # LR rows/cols; the HR patch starts at scale x these
    left: int
    flip_w: bool
    flip_h: bool


GRADING_WEIGHTS: dict[str, float] = {"bt2446a": 0.35, "bt2408": 0.2, "bt2446c": 0.09, "reinhard": 0.09,
                                     "drago": 0.09, "mantiuk": 0.09, "hable": 0.09}
"""How often training patches come from each grading: the default convention most, BT.2408 next."""

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""(LR inputs N x 3 x h x w, HR targets N x 3 x H x W, grading indices N)."""


class ScenePatchBatches(torch.utils.data.Dataset[Batch]):
    """Training batches of random aligned crops of formed pairs; item ``step`` is the batch of that step.

    A batch depends only on (seed, step), never on the order of requests or
    on which DataLoader worker makes it, so training is reproducible and
    resumable at any step. Each patch: a scene chosen uniformly (every scene
    weighs the same, whatever its size), a grading among the scene's by
    ``GRADING_WEIGHTS``, one of that grading's renditions uniformly, an LR
    offset uniformly among even offsets, then a horizontal and a vertical
    flip each with probability 1/2, applied to LR and HR alike. The third
    tensor is each patch's grading index (:data:`gpgmnet.gradings.NAMES`).

    Args:
        pairs: per scene, its renditions (:func:`formed_pairs`,
            :func:`graded_training_pairs`).
        batch_size: patches per batch.
        hr_patch: HR patch side (paper: 160); a multiple of the scale whose
            LR side ``hr_patch / scale`` is even.
        seed: sampling seed.
    """

    def __init__(self, pairs: Sequence[Sequence[FormedPair]], batch_size: int, hr_patch: int, seed: int) -> None:
        if not pairs:
            raise DataError("no training scenes")
        scale = pairs[0][0].scale
        if hr_patch % (2 * scale):
            raise DataError(f"hr_patch {hr_patch} must be a multiple of 2 x scale = {2 * scale}")
        self.scale = scale
        self.batch_size = batch_size
        self.hr_patch = hr_patch
        self.lr_patch = hr_patch // scale
        self.seed = seed
        self.names: list[str] = []
        self.inputs: list[list[NDArray[np.float32]]] = []
        self.targets: list[list[NDArray[np.uint16]]] = []
        self.gradings: list[list[int]] = []
        # Per scene: its gradings, their sampling probabilities, and each one's variants (fixed, so made once).
        self.grading_choices: list[tuple[list[int], NDArray[np.float64], list[list[int]]]] = []
        for variants in pairs:
            h, w = variants[0].lr_size
            if h < self.lr_patch or w < self.lr_patch:
                log.warning("skipping %s: %dx%d LR is smaller than the %d patch", variants[0].name, h, w, self.lr_patch)
                continue
            self.names.append(variants[0].name)
            self.inputs.append([p.network_input() for p in variants])
            self.targets.append([p.hdr_codes for p in variants])
            self.gradings.append([gradings.index_of(p.grading) for p in variants])
            by_grading: dict[int, list[int]] = {}
            for variant, grading in enumerate(self.gradings[-1]):
                by_grading.setdefault(grading, []).append(variant)
            present = sorted(by_grading)
            weights = np.array([GRADING_WEIGHTS.get(gradings.NAMES[g], 0.05) for g in present])
            self.grading_choices.append((present, weights / weights.sum(), [by_grading[g] for g in present]))
        if not self.names:
            raise DataError(f"no training scene is large enough for {hr_patch}x{hr_patch} HR patches")

    def __len__(self) -> int:
        return 2**62  # indexed by step, drawn on demand

    def refs(self, step: int) -> list[PatchRef]:
        """The patches of the batch of ``step``."""
        rng = np.random.default_rng([self.seed, step])
        refs = []
        for _ in range(self.batch_size):
            scene = int(rng.integers(len(self.names)))
            present, probabilities, variants_of = self.grading_choices[scene]
            candidates = variants_of[int(rng.choice(len(present), p=probabilities))]
            variant = candidates[int(rng.integers(len(candidates)))]
            _, h, w = self.inputs[scene][variant].shape
            top = 2 * int(rng.integers((h - self.lr_patch) // 2 + 1))
            left = 2 * int(rng.integers((w - self.lr_patch) // 2 + 1))
            flips = rng.random(2) < 0.5
            refs.append(PatchRef(scene, variant, top, left, bool(flips[0]), bool(flips[1])))
        return refs

    def __getitem__(self, step: int) -> Batch:
        lp, s = self.lr_patch, self.scale
        lr_batch = np.empty((self.batch_size, 3, lp, lp), dtype=np.float32)
        hr_batch = np.empty((self.batch_size, 3, lp * s, lp * s), dtype=np.float32)
        grading_batch = np.empty(self.batch_size, dtype=np.int64)
        for b, ref in enumerate(self.refs(step)):
            grading_batch[b] = self.gradings[ref.scene][ref.variant]
            lr = self.inputs[ref.scene][ref.variant][:, ref.top : ref.top + lp, ref.left : ref.left + lp]
            hr = self.targets[ref.scene][ref.variant][
                s * ref.top : s * (ref.top + lp), s * ref.left : s * (ref.left + lp)
            ].transpose(2, 0, 1)
            if ref.flip_w:
                lr, hr = lr[:, :, ::-1], hr[:, :, ::-1]
            if ref.flip_h:
                lr, hr = lr[:, ::-1], hr[:, ::-1]
            lr_batch[b] = lr
            hr_batch[b] = hr
        hr_batch *= np.float32(1.0 / HDR_CODE_SCALE)
        return torch.from_numpy(lr_batch), torch.from_numpy(hr_batch), torch.from_numpy(grading_batch)


def scene_training_batches(
    scenes_dir: Path,
    scale: int,
    batch_size: int,
    hr_patch: int,
    seed: int,
    variants: int,
    split_file: Path = SPLIT_FILE,
    cache_dir: Path | str | None = None,
    use_cache: bool = True,
    progress: bool = False,
    graded: bool = False,
) -> ScenePatchBatches:
    """Batches from the training part of the split of ``scenes_dir`` (validation scenes never enter).

    ``graded``: every grading with variations and codec round trips
    (:func:`graded_training_pairs`); otherwise BT.2446-1 Method A only, clean (the paper's formation).
    """
    paths = split_files(scenes_dir, "train", split_file)
    folder = cache_root(cache_dir) / f"train_x{scale}" if use_cache else None
    if graded:
        pairs = graded_training_pairs(paths, scale, variants, cache_dir=folder, seed=seed, progress=progress)
    else:
        pairs = formed_pairs(paths, scale, variants, cache_dir=folder, seed=seed, progress=progress)
    return ScenePatchBatches(pairs, batch_size, hr_patch, seed)


# --------------------------------------------------------------------------
# Kim et al.'s dataset (MATLAB v7.3 = HDF5)

KIM_TRAIN_FILES = {
    2: ("SDR_youtube_80.mat", "HDR_youtube_80.mat"),
    4: ("SDR_youtube_80_x4.mat", "HDR_youtube_80.mat"),
}
KIM_TRAIN_KEYS = ("SDR_data", "HDR_data")
KIM_TEST_FILES = {2: ("testset_SDR_x2.mat", "testset_HDR.mat"), 4: ("testset_SDR_x4.mat", "testset_HDR.mat")}
KIM_TEST_KEYS = ("SDR_YUV", "HDR_YUV")


class MatArray:
    """A MATLAB ``[H, W, 3, N]`` array in a v7.3 (HDF5) .mat file, read lazily as N x 3 x H x W.

    MATLAB stores column-major, so HDF5 (and h5py) see the axes reversed,
    ``[N, 3, W, H]``; :meth:`read` swaps the last two back. The file is opened
    on first use in each process (h5py handles do not survive a fork).
    """

    def __init__(self, path: Path, key: str) -> None:
        import h5py  # type: ignore[import-untyped]

        self.path = Path(path)
        self.key = key
        if not self.path.is_file():
            raise DataError(f"{self.path} does not exist")
        if not h5py.is_hdf5(self.path):
            raise DataError(f"{self.path} is not a MATLAB v7.3 (HDF5) file; re-save it with save(..., '-v7.3')")
        try:
            with h5py.File(self.path, "r") as f:
                if key not in f:
                    raise DataError(f"{self.path} has no variable '{key}' (has: {', '.join(sorted(f.keys()))})")
                shape = f[key].shape
        except OSError as error:
            raise DataError(f"{self.path} cannot be read as HDF5 ({error})") from None
        if len(shape) != 4 or shape[1] != 3:
            raise DataError(f"{self.path}: '{key}' is not an [H, W, 3, N] array (HDF5 shape {shape})")
        self.count, _, width, height = (int(v) for v in shape)
        self.size = (height, width)
        self._dataset: Any = None

    def __len__(self) -> int:
        return self.count

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None}

    def read(self, index: slice | Sequence[int]) -> NDArray[Any]:
        """Items ``index`` (a slice, or strictly increasing indices) as n x 3 x H x W, the file's dtype."""
        if self._dataset is None:
            import h5py  # type: ignore[import-untyped]

            self._dataset = h5py.File(self.path, "r")[self.key]
        data = self._dataset[index if isinstance(index, slice) else list(index)]
        return np.ascontiguousarray(np.asarray(data).transpose(0, 1, 3, 2))


class KimPairs:
    """Paired SDR (LR) / HDR (HR) YUV arrays of Kim et al.: network inputs and targets as float32.

    Args:
        sdr_path, hdr_path: the .mat files.
        scale: 2 or 4; the HR size must be ``scale`` x the LR size.
        keys: variable names (training files: ``SDR_data``/``HDR_data``,
            test files: ``SDR_YUV``/``HDR_YUV``).
    """

    def __init__(self, sdr_path: Path, hdr_path: Path, scale: int, keys: tuple[str, str] = KIM_TRAIN_KEYS) -> None:
        check_scale(scale)
        self.sdr = MatArray(sdr_path, keys[0])
        self.hdr = MatArray(hdr_path, keys[1])
        self.scale = scale
        if len(self.sdr) != len(self.hdr):
            raise DataError(f"{sdr_path} has {len(self.sdr)} items but {hdr_path} has {len(self.hdr)}")
        (h, w), (hh, hw) = self.sdr.size, self.hdr.size
        if (hh, hw) != (scale * h, scale * w):
            raise DataError(f"{sdr_path}: {h}x{w} LR items do not match {hh}x{hw} HR items at x{scale}")

    def __len__(self) -> int:
        return len(self.sdr)

    def read(self, index: slice | Sequence[int]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(LR n x 3 x h x w codes / 255, HR n x 3 x H x W codes / 1023)."""
        lr = self.sdr.read(index).astype(np.float32) / np.float32(SDR_CODE_SCALE)
        hr = self.hdr.read(index).astype(np.float32) / np.float32(HDR_CODE_SCALE)
        return lr, hr


def kim_training_pairs(kim_dir: Path, scale: int) -> KimPairs:
    """The training patch files of Kim et al. in ``kim_dir`` for a scale."""
    kim_dir = Path(kim_dir)
    sdr_name, hdr_name = KIM_TRAIN_FILES[scale]
    sdr_path = kim_dir / sdr_name
    if scale == 4 and not sdr_path.exists() and (kim_dir / "SDR_youtube_80.mat").exists():
        sdr_path = kim_dir / "SDR_youtube_80.mat"  # accepted when its LR size fits x4 (checked by KimPairs)
    return KimPairs(sdr_path, kim_dir / hdr_name, scale, KIM_TRAIN_KEYS)


def kim_test_pairs(kim_dir: Path, scale: int) -> KimPairs:
    """The 4K test set of Kim et al. in ``kim_dir``: LR SDR frames and HDR ground truth."""
    sdr_name, hdr_name = KIM_TEST_FILES[scale]
    return KimPairs(Path(kim_dir) / sdr_name, Path(kim_dir) / hdr_name, scale, KIM_TEST_KEYS)


class KimPatchBatches(torch.utils.data.Dataset[Batch]):
    """Training batches from Kim et al.'s patches (all but the last 500), with flips; item = step.

    Like :class:`ScenePatchBatches`, a batch depends only on (seed, step).
    Patches are whole stored patches (80x80 or 40x40 LR, 160x160 HR).
    """

    def __init__(self, pairs: KimPairs, batch_size: int, seed: int, validation: int = KIM_VALIDATION_PATCHES) -> None:
        if len(pairs) <= validation:
            raise DataError(
                f"{pairs.sdr.path} has {len(pairs)} patches, not more than the {validation} validation ones"
            )
        self.pairs = pairs
        self.batch_size = batch_size
        self.seed = seed
        self.train_count = len(pairs) - validation

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int) -> Batch:
        rng = np.random.default_rng([self.seed, step])
        picks = rng.integers(self.train_count, size=self.batch_size)
        unique, inverse = np.unique(picks, return_inverse=True)  # h5py wants increasing, distinct indices
        lr_all, hr_all = self.pairs.read(unique.tolist())
        lr, hr = lr_all[inverse], hr_all[inverse]
        flips = rng.random((self.batch_size, 2)) < 0.5
        for b in range(self.batch_size):
            if flips[b, 0]:
                lr[b], hr[b] = lr[b][:, :, ::-1], hr[b][:, :, ::-1]
            if flips[b, 1]:
                lr[b], hr[b] = lr[b][:, ::-1], hr[b][:, ::-1]
        bt2446a = torch.zeros(self.batch_size, dtype=torch.int64)  # Kim et al.'s SDR is YouTube's down-conversion
        return torch.from_numpy(np.ascontiguousarray(lr)), torch.from_numpy(np.ascontiguousarray(hr)), bt2446a


def kim_validation_batches(
    pairs: KimPairs, batch_size: int = 50, validation: int = KIM_VALIDATION_PATCHES, limit: int | None = None
) -> Iterable[tuple[NDArray[np.float32], NDArray[np.float32]]]:
    """The validation patches (the last ``validation`` ones) in order, ``batch_size`` at a time."""
    start = max(len(pairs) - validation, 0)
    stop = len(pairs) if limit is None else min(len(pairs), start + limit)
    for first in range(start, stop, batch_size):
        yield pairs.read(slice(first, min(first + batch_size, stop)))

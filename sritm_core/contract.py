"""The public serving contract: model names, tensor names, code scales and the I420 frame layout.

Platform teams, the client SDK, the model repository and the training code all
rely on these names; the README documents them. Pure Python: importable
without numpy or torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

SCALES = (2, 4)
SDR_CODE_SCALE = 255.0
"""GPGMNet's input is 8-bit codes / 255 (the convention of Kim et al.'s dataset)."""
HDR_CODE_SCALE = 1023.0
"""GPGMNet's output is 10-bit codes / 1023."""

INPUT_NAME = "SDR_I420"
"""UINT8 [-1, -1]: an H×W BT.709 narrow-range 8-bit frame in I420 layout (3H/2 rows of W)."""
INPUT_DATATYPE = "UINT8"

OUTPUT_NAME = "HDR_I420"
"""UINT16 [-1, -1]: an sH×sW BT.2020 NCL, PQ, narrow-range 10-bit frame in I420 layout (yuv420p10le)."""
OUTPUT_DATATYPE = "UINT16"

CONVENTION_NAME = "CONVENTION"
"""BYTES [1], optional: the SDR convention the input was graded with, one of :data:`CONVENTIONS`
(default ``bt2446a``)."""
CONVENTION_DATATYPE = "BYTES"
PEAK_NITS_NAME = "PEAK_NITS"
"""FP32 [1], optional: the target display's peak in cd/m^2, 400-4000 (default 1000, the network's own grade)."""
PEAK_NITS_DATATYPE = "FP32"

CONVENTIONS = ("bt2446a", "bt2408", "bt2446c", "reinhard", "drago", "mantiuk", "hable")
"""The SDR conventions a request can name, in the order of the network's condition one-hot
(``gpgmnet.gradings`` implements each; append only)."""
DEFAULT_CONVENTION = "bt2446a"
NETWORK_PEAK_NITS = 1000.0
"""The peak of the grade the network makes (its training masters' mastering display)."""
PEAK_NITS_RANGE = (400.0, 4000.0)


class RenderingError(ValueError):
    """A convention or target peak the service does not offer; the message names the allowed values."""


@dataclass(frozen=True)
class Rendering:
    """How a request wants its frame rendered: the input's SDR convention and the target display's peak.

    Raises:
        RenderingError: an unknown convention (the message lists the allowed
            ones) or a peak outside :data:`PEAK_NITS_RANGE`.
    """

    convention: str = DEFAULT_CONVENTION
    peak_nits: float = NETWORK_PEAK_NITS

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise RenderingError(
                f"{CONVENTION_NAME} {self.convention!r} is not a known convention; allowed: {', '.join(CONVENTIONS)}"
            )
        low, high = PEAK_NITS_RANGE
        if not low <= self.peak_nits <= high:  # NaN fails this too
            raise RenderingError(
                f"{PEAK_NITS_NAME} must be between {low:g} and {high:g} cd/m^2, not {self.peak_nits:g}"
            )

    @property
    def convention_index(self) -> int:
        """The convention's position in :data:`CONVENTIONS`: the hot element of the network's condition one-hot."""
        return CONVENTIONS.index(self.convention)

    @property
    def is_default(self) -> bool:
        """Whether this is the default rendering: ``bt2446a`` at the network's own peak of 1000 cd/m^2."""
        return self == Rendering()


# Tensors inside the ensemble, between its steps.
NETWORK_INPUT_NAME = "LR_YUV"
"""FP32 [1, 3, h, w]: YUV 4:4:4, 8-bit narrow-range codes / 255 (the convention of Kim et al.)."""
NETWORK_OUTPUT_NAME = "RESIDUAL"
"""FP32 [1, 3, sh, sw]: the network's output without its bicubic skip, in 10-bit codes / 1023."""
NETWORK_CONDITION_NAME = "CONDITION"
"""FP32 [1, K]: the one-hot of the request's convention (K = len(CONVENTIONS)), from the pre-processor."""
TARGET_PEAK_NAME = "TARGET_PEAK"
"""FP32 [1]: the validated target peak in cd/m^2, from the pre-processor to the post-processor."""

PREPROCESS_MODEL = "sritm_preprocess"
POSTPROCESS_MODEL = "sritm_postprocess"


def ensemble_name(scale: int) -> str:
    """The served ensemble for a scale: ``sritm_x2`` or ``sritm_x4``."""
    check_scale(scale)
    return f"sritm_x{scale}"


def network_model_name(scale: int) -> str:
    """The network step inside the ensemble: ``gpgmnet_x2`` or ``gpgmnet_x4``."""
    check_scale(scale)
    return f"gpgmnet_x{scale}"


def check_scale(scale: int) -> None:
    """Raises ``ValueError`` unless ``scale`` is one of :data:`SCALES`."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, not {scale}")


@dataclass(frozen=True)
class FrameLimits:
    """The frame sizes a server accepts, as height and width of the low-resolution input.

    These defaults are the one source: ``build/assemble_repository.py`` writes
    them (or a deployment's ``--min-height`` … ``--max-width``) into the
    ``parameters`` of every model it generates, each model reads them from its
    own config (:func:`frame_limits_from_parameters`), and
    ``build/build_engine.py`` sizes the TensorRT profile from the same values.
    """

    min_height: int = 16
    min_width: int = 16
    max_height: int = 1088
    max_width: int = 1920

    def __post_init__(self) -> None:
        if not 2 <= self.min_height <= self.max_height or not 2 <= self.min_width <= self.max_width:
            raise ValueError(f"frame limits must satisfy 2 <= min <= max, not {self.min_height}x{self.min_width} "
                             f"to {self.max_height}x{self.max_width}")


def frame_limits_from_parameters(parameters: Mapping[str, str]) -> FrameLimits:
    """FrameLimits from a model config's ``parameters`` (``min_height`` … ``max_width``), defaults elsewhere."""
    defaults = FrameLimits()
    return FrameLimits(
        **{f.name: int(parameters.get(f.name) or getattr(defaults, f.name)) for f in fields(FrameLimits)}
    )


class FrameLayoutError(ValueError):
    """An array that is not a valid I420 frame for this service."""


def i420_frame_size(shape: tuple[int, ...], limits: FrameLimits | None = None) -> tuple[int, int]:
    """The frame's (height, width) from the shape of its I420 buffer, validated.

    The buffer holds 3H/2 rows of W: H rows of luma, then the two H/2×W/2 chroma
    planes packed contiguously. The checks use only the shape, so a request is
    rejected before anything is allocated for it.
    """
    if len(shape) != 2:
        raise FrameLayoutError(f"an I420 frame has 2 dimensions (3H/2 rows, W columns), not {len(shape)}")
    rows, width = shape
    if rows == 0 or width == 0:
        raise FrameLayoutError(f"the frame is empty ({rows}×{width})")
    if rows % 3 != 0:
        raise FrameLayoutError(f"the row count {rows} is not 3H/2 for any even height H")
    height = rows * 2 // 3
    if height % 2 or width % 2:
        raise FrameLayoutError(f"I420 needs an even height and width, got {height}×{width}")
    if limits is not None:
        _check_limits(height, width, limits)
    return height, width


def _check_limits(height: int, width: int, limits: FrameLimits) -> None:
    if height < limits.min_height or width < limits.min_width:
        raise FrameLayoutError(
            f"the frame {height}×{width} is smaller than the minimum {limits.min_height}×{limits.min_width}"
        )
    if height > limits.max_height or width > limits.max_width:
        raise FrameLayoutError(
            f"the frame {height}×{width} is larger than the maximum {limits.max_height}×{limits.max_width}"
        )


def check_network_input_shape(shape: tuple[int, ...], limits: FrameLimits) -> None:
    """Checks a 1×3×h×w network-input shape against the frame limits, for the steps after the pre-processor.

    Clients can call the ensembles' steps directly; this keeps the limits the
    pre-processor enforces from being bypassed that way.
    """
    if len(shape) != 4 or tuple(shape[:2]) != (1, 3):
        raise FrameLayoutError(f"{NETWORK_INPUT_NAME} must be 1×3×h×w, not {'×'.join(map(str, shape))}")
    _check_limits(shape[2], shape[3], limits)

"""HDR10 metadata and the byte-level surgery that puts it into files.

SMPTE ST 2086 mastering display (:class:`MasteringDisplay`) and CTA-861.3
content light level (:class:`ContentLightLevel`, measured by
:func:`frame_light_levels`), and the HEVC SEI / ``hvcC`` / MP4 ``mdcv``/``clli``
box patching that :meth:`sritm_client.video.writer.Hdr10VideoWriter.close` uses
(see the package docstring for why the values are patched in after encoding).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sritm_client.video.common import U16Array, VideoError
from sritm_core.colour import BT2020, codes_to_rgb, i420_to_yuv444, pq_eotf
from sritm_core.contract import NETWORK_PEAK_NITS

_HEVC_MAX_10BIT: Final = 1023
_SEI_PREFIX_NAL: Final = 39
_SEI_CONTENT_LIGHT_LEVEL: Final = 144
_VISUAL_SAMPLE_ENTRY_SIZE: Final = 8 + 78  # box header + ISO/IEC 14496-12 VisualSampleEntry fields; then child boxes


# --------------------------------------------------------------------------
# HDR10 metadata


@dataclass(frozen=True)
class MasteringDisplay:
    """SMPTE ST 2086 mastering display colour volume, in the units x265 and HEVC use.

    Chromaticities are in units of 0.00002 (x = value / 50000), luminances in
    units of 0.0001 cd/m^2, as in the HEVC mastering-display SEI, x265's
    ``master-display`` option and the MP4 ``mdcv`` box.
    """

    green: tuple[int, int]
    blue: tuple[int, int]
    red: tuple[int, int]
    white_point: tuple[int, int]
    max_luminance: int
    min_luminance: int

    def x265(self) -> str:
        """The value of x265's ``master-display`` option."""
        g, b, r, w = self.green, self.blue, self.red, self.white_point
        return (
            f"G({g[0]},{g[1]})B({b[0]},{b[1]})R({r[0]},{r[1]})"
            f"WP({w[0]},{w[1]})L({self.max_luminance},{self.min_luminance})"
        )

    def mdcv_payload(self) -> bytes:
        """Body of an ISO/IEC 14496-15 ``mdcv`` box (same layout as the SEI)."""
        return struct.pack(
            ">8HII",
            *self.green,
            *self.blue,
            *self.red,
            *self.white_point,
            self.max_luminance,
            self.min_luminance,
        )


P3D65_1000_NITS: Final = MasteringDisplay(
    green=(13250, 34500),  # (0.265, 0.690)
    blue=(7500, 3000),  # (0.150, 0.060)
    red=(34000, 16000),  # (0.680, 0.320)
    white_point=(15635, 16450),  # D65 (0.3127, 0.3290)
    max_luminance=10_000_000,  # 1000 cd/m^2
    min_luminance=1,  # 0.0001 cd/m^2
)
"""The usual HDR10 master: a P3-D65 display of 1000 cd/m^2 peak, 0.0001 cd/m^2 black.

x265: ``G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)``.
"""


def mastering_display_for(peak_nits: float) -> MasteringDisplay:
    """:data:`P3D65_1000_NITS` with its peak lowered to ``peak_nits`` when the output was made for a dimmer display.

    The service's grade peaks at 1000 cd/m^2; for a target below that the
    post-processor's BT.2390 EETF makes it peak at the target, and the
    ST 2086 metadata says so. Above 1000 the grade is unchanged, and so is the metadata.
    """
    peak = min(float(peak_nits), NETWORK_PEAK_NITS)
    return dataclasses.replace(P3D65_1000_NITS, max_luminance=round(peak * 10_000))



@dataclass(frozen=True)
class ContentLightLevel:
    """CTA-861.3 content light level, in whole cd/m^2 (0 .. 65535)."""

    max_cll: int
    max_fall: int


def checked_i420_u16(i420_u16: npt.ArrayLike) -> U16Array:
    """``i420_u16`` as an array, once it is known to be a uint16 ``(3H/2, W)`` I420 buffer with H and W even.

    Raises:
        ValueError: another dtype or shape.
    """
    a = np.asarray(i420_u16)
    if a.dtype != np.uint16:
        raise ValueError(f"HDR frames must be uint16 10-bit codes, got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[0] % 3 or (2 * a.shape[0] // 3) % 2 or a.shape[1] % 2:
        raise ValueError(f"HDR frame must be a (3H/2, W) I420 buffer with H, W even, got {a.shape}")
    return a


_PQ_LUT_STEPS: Final = 65535


@functools.lru_cache(maxsize=1)
def _pq_lut() -> npt.NDArray[np.float64]:
    """PQ EOTF (cd/m^2) at the signal values k / 65535, k = 0 .. 65535."""
    lut: npt.NDArray[np.float64] = pq_eotf(np.arange(_PQ_LUT_STEPS + 1, dtype=np.float64) / _PQ_LUT_STEPS)
    return lut


def frame_light_levels(i420_u16: npt.ArrayLike) -> tuple[float, float]:
    """Light level statistics of one 10-bit PQ BT.2020 I420 frame (CTA-861.3).

    Each pixel's light level is max(R, G, B) in cd/m^2, where R, G, B are found
    by upsampling chroma (:func:`sritm_core.colour.i420_to_yuv444`), decoding the
    narrow-range codes to BT.2020 R'G'B' (:func:`sritm_core.colour.codes_to_rgb`,
    clipped to [0, 1]) and applying the PQ EOTF
    (:func:`sritm_core.colour.pq_eotf`). The EOTF is increasing, so
    max(EOTF(R'), EOTF(G'), EOTF(B')) = EOTF(max(R', G', B')): the maximum is
    exact from one EOTF evaluation. The frame average is the mean of EOTF over
    a histogram of max(R', G', B') quantised to 16 bits (2^16 bins; the result
    is within about 0.01 % of the per-pixel mean, far below the 1 cd/m^2 the
    metadata carries) which is several times faster at 4K than running the
    EOTF on every pixel.

    Args:
        i420_u16: ``(3H/2, W)`` uint16 codes (yuv420p10le layout).

    Returns:
        ``(max_cll, frame_average)``: the largest pixel light level and the
        mean pixel light level of the frame, in cd/m^2 (unrounded).
    """
    a = checked_i420_u16(i420_u16)
    rgb = codes_to_rgb(i420_to_yuv444(a.astype(np.float32)), BT2020, 10)
    signal = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])
    np.clip(signal, 0.0, 1.0, out=signal)
    peak = float(pq_eotf(float(signal.max())))
    bins = np.rint(signal * np.float32(_PQ_LUT_STEPS)).astype(np.int32).ravel()
    counts = np.bincount(bins, minlength=_PQ_LUT_STEPS + 1)
    average = float(counts @ _pq_lut()) / bins.size
    return peak, average


def cll_value(value: float) -> int:
    """A light level in cd/m^2 rounded to the nearest whole one (halves up), clamped to CTA-861.3's 0 .. 65535."""
    return min(65535, max(0, int(math.floor(value + 0.5))))


def content_light_level(frames: Iterable[npt.ArrayLike]) -> ContentLightLevel:
    """MaxCLL / MaxFALL (CTA-861.3) of a sequence of 10-bit I420 frames.

    MaxCLL is the largest :func:`frame_light_levels` maximum, MaxFALL the
    largest frame average, both rounded to the nearest cd/m^2. An empty
    sequence gives (0, 0), CTA-861.3's "unknown".
    """
    max_cll = max_fall = 0.0
    for f in frames:
        cll, fall = frame_light_levels(f)
        max_cll, max_fall = max(max_cll, cll), max(max_fall, fall)
    return ContentLightLevel(cll_value(max_cll), cll_value(max_fall))


# --------------------------------------------------------------------------
# HEVC bitstream and MP4 box surgery (used by Hdr10VideoWriter.close)


def rbsp_from_ebsp(ebsp: bytes) -> bytes:
    """The raw payload of a NAL unit: its emulation-prevention bytes (the 03 of each ``00 00 03``) removed."""
    out = bytearray()
    zeros = 0
    for byte in ebsp:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def ebsp_from_rbsp(rbsp: bytes) -> bytes:
    """The inverse of :func:`rbsp_from_ebsp`: a 03 inserted wherever ``00 00`` is followed by a byte up to 03."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _patch_sei_nal(nal: bytes, cll: ContentLightLevel) -> bytes:
    """Rewrite the content-light-level message(s) of a prefix SEI NAL unit."""
    if len(nal) < 3 or (nal[0] >> 1) & 0x3F != _SEI_PREFIX_NAL:
        return nal
    rbsp = bytearray(rbsp_from_ebsp(nal[2:]))
    pos, changed = 0, False
    # sei_message()s until rbsp_trailing_bits (0x80 as the last byte).
    while pos < len(rbsp) - 1:
        ptype = 0
        while pos < len(rbsp) and rbsp[pos] == 0xFF:
            ptype, pos = ptype + 255, pos + 1
        if pos >= len(rbsp):
            return nal
        ptype, pos = ptype + rbsp[pos], pos + 1
        psize = 0
        while pos < len(rbsp) and rbsp[pos] == 0xFF:
            psize, pos = psize + 255, pos + 1
        if pos >= len(rbsp):
            return nal
        psize, pos = psize + rbsp[pos], pos + 1
        if pos + psize > len(rbsp):
            return nal
        if ptype == _SEI_CONTENT_LIGHT_LEVEL and psize == 4:
            rbsp[pos : pos + 4] = struct.pack(">HH", cll.max_cll, cll.max_fall)
            changed = True
        pos += psize
    return nal[:2] + ebsp_from_rbsp(bytes(rbsp)) if changed else nal


def patch_length_prefixed(
    data: bytes | memoryview, length_size: int, cll: ContentLightLevel
) -> bytes | None:
    """Patch the prefix SEI NAL units of a length-prefixed (MP4/Matroska) HEVC sample.

    Returns the new sample, or None when nothing changed (no SEI, or a sample
    that does not parse, which is left alone). Only NAL headers are read
    until a prefix SEI is found, so ordinary slices cost no copy.
    """
    spans: list[tuple[int, int]] = []
    has_sei = False
    pos, size = 0, len(data)
    while pos + length_size < size:
        n = int.from_bytes(data[pos : pos + length_size], "big")
        start = pos + length_size
        if n < 2 or start + n > size:
            return None
        has_sei |= (data[start] >> 1) & 0x3F == _SEI_PREFIX_NAL
        spans.append((start, n))
        pos = start + n
    if not has_sei or pos != size:
        return None
    out = bytearray()
    changed = False
    for start, n in spans:
        nal = bytes(data[start : start + n])
        new = _patch_sei_nal(nal, cll)
        changed |= new is not nal
        out += len(new).to_bytes(length_size, "big") + new
    return bytes(out) if changed else None


def patch_hvcc(hvcc: bytes, cll: ContentLightLevel) -> bytes:
    """Patch SEI NAL units stored in an ``hvcC`` record (ISO/IEC 14496-15 8.3.3.1)."""
    if len(hvcc) < 23:
        return hvcc
    out = bytearray(hvcc[:22])
    num_arrays = hvcc[22]
    out.append(num_arrays)
    pos = 23
    for _ in range(num_arrays):
        if pos + 3 > len(hvcc):
            return hvcc
        out += hvcc[pos : pos + 3]
        count = int.from_bytes(hvcc[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            n = int.from_bytes(hvcc[pos : pos + 2], "big")
            nal = _patch_sei_nal(hvcc[pos + 2 : pos + 2 + n], cll)
            out += len(nal).to_bytes(2, "big") + nal
            pos += 2 + n
    return bytes(out + hvcc[pos:])


def _mp4_boxes(buf: bytes | bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, offset, header size, box size) of the boxes in buf[start:end]."""
    pos = start
    while pos + 8 <= end:
        size, typ = struct.unpack_from(">I4s", buf, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", buf, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise VideoError(f"corrupt MP4 box {typ!r} at offset {pos}")
        yield typ, pos, header, size
        pos += size


def _top_level_boxes(f: Any, file_size: int) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of the top-level boxes of an MP4 file, reading headers only."""
    boxes = []
    pos = 0
    while pos + 8 <= file_size:
        f.seek(pos)
        head = f.read(16)
        size, typ = struct.unpack_from(">I4s", head)
        if size == 1:
            (size,) = struct.unpack_from(">Q", head, 8)
        elif size == 0:
            size = file_size - pos
        if size < 8 or pos + size > file_size:
            raise VideoError(f"corrupt MP4 box {typ!r} at offset {pos}")
        boxes.append((typ, pos, size))
        pos += size
    return boxes


def insert_hdr_boxes(path: Path, display: MasteringDisplay, cll: ContentLightLevel) -> None:
    """Add ``mdcv`` + ``clli`` boxes to the HEVC sample entry of an MP4 whose moov follows mdat, replacing any.

    Only the moov box and what follows it are rewritten (moov is read into
    memory; mdat is not touched): the sample entry and its ancestors grow by
    the 44 inserted bytes. Chunk offsets point into mdat, which comes before
    moov, so they stay valid.
    """
    extra = (
        struct.pack(">I4s", 32, b"mdcv")
        + display.mdcv_payload()
        + struct.pack(">I4s", 12, b"clli")
        + struct.pack(">HH", cll.max_cll, cll.max_fall)
    )
    with open(path, "r+b") as f:
        file_size = os.fstat(f.fileno()).st_size
        top = _top_level_boxes(f, file_size)
        moov = [(pos, size) for typ, pos, size in top if typ == b"moov"]
        mdat = [pos for typ, pos, _ in top if typ == b"mdat"]
        if len(moov) != 1 or not mdat or moov[0][0] < max(mdat):
            raise VideoError(f"{path}: unexpected MP4 layout (need one moov after mdat)")
        moov_pos, moov_size = moov[0]
        f.seek(moov_pos)
        buf = bytearray(f.read(moov_size))
        tail = f.read()

        def find_entry(start: int, end: int, chain: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
            # chain: (offset, header size) of the boxes whose size must grow
            for typ, pos, hdr, size in _mp4_boxes(buf, start, end):
                if typ in (b"trak", b"mdia", b"minf", b"stbl"):
                    found = find_entry(pos + hdr, pos + size, [*chain, (pos, hdr)])
                    if found:
                        return found
                elif typ == b"stsd":  # FullBox + entry_count, then the sample entries
                    for etyp, epos, ehdr, _ in _mp4_boxes(buf, pos + hdr + 8, pos + size):
                        if etyp in (b"hvc1", b"hev1"):
                            return [*chain, (pos, hdr), (epos, ehdr)]
            return None

        moov_hdr = 16 if struct.unpack_from(">I", buf, 0)[0] == 1 else 8
        chain = find_entry(moov_hdr, moov_size, [(0, moov_hdr)])
        if chain is None:
            raise VideoError(f"{path}: no HEVC sample entry found in moov")
        if any(hdr != 8 for _, hdr in chain):
            raise VideoError(f"{path}: 64-bit box sizes around the sample entry are not supported")
        entry = chain[-1][0]
        entry_end = entry + struct.unpack_from(">I", buf, entry)[0]
        # A stream copied from an HDR10 file already has the boxes (of that file): drop them, last first.
        stale = [(pos, size) for typ, pos, _, size in _mp4_boxes(buf, entry + _VISUAL_SAMPLE_ENTRY_SIZE, entry_end)
                 if typ in (b"mdcv", b"clli")]
        for pos, size in reversed(stale):
            del buf[pos : pos + size]
        growth = len(extra) - sum(size for _, size in stale)
        insert_at = entry_end - sum(size for _, size in stale)
        for pos, _ in chain:
            struct.pack_into(">I", buf, pos, struct.unpack_from(">I", buf, pos)[0] + growth)
        buf[insert_at:insert_at] = extra
        f.seek(moov_pos)
        f.write(buf)
        f.write(tail)
        f.truncate()

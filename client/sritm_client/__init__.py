"""sritm client SDK: SDR video frames in, 4K HDR10 frames out, from a Triton server serving GPGMNet.

Needs only numpy, tritonclient and grpc (never torch)::

    from sritm_client import SdrFrame, SritmClient

    with SritmClient("127.0.0.1:8001", scale=4) as client:
        hdr = client.convert(SdrFrame.from_rgb8(rgb, pts=0))
        for hdr in client.stream(frames, window=8):
            ...
"""

from sritm_client.aio import AsyncSritmClient
from sritm_client.client import RetryPolicy, SritmClient, TlsOptions
from sritm_client.errors import (
    ContractMismatchError,
    InvalidFrameError,
    ServerError,
    ServerUnavailableError,
    SritmError,
)
from sritm_client.frames import HdrFrame, SdrFrame

__all__ = [
    "SdrFrame",
    "HdrFrame",
    "SritmClient",
    "AsyncSritmClient",
    "RetryPolicy",
    "TlsOptions",
    "SritmError",
    "InvalidFrameError",
    "ServerUnavailableError",
    "ContractMismatchError",
    "ServerError",
]

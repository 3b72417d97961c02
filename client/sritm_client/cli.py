"""The ``sritm`` command.

``sritm convert`` needs only the client install (no torch); ``sritm train`` and
``sritm evaluate`` load the training code on demand, from the ``net`` extra.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from sritm_client.client import DEFAULT_TIMEOUT_S, DEFAULT_URL, RetryPolicy, SritmClient, TlsOptions
from sritm_client.errors import SritmError
from sritm_core.contract import CONVENTIONS, DEFAULT_CONVENTION, NETWORK_PEAK_NITS, Rendering

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def _convert_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "convert",
        help="convert an SDR image or video to HDR10 on a Triton server",
        description="Convert an SDR image (PNG/JPEG, 8-bit, BT.709) or video (8-bit, anything PyAV decodes) "
        "to HDR10: images to .png (16-bit full-range PQ BT.2020 R'G'B') or .yuv (raw yuv420p10le), "
        "videos to .mkv/.mp4 (HEVC Main10 with HDR10 metadata, audio copied) or .yuv (raw yuv420p10le).",
    )
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4)
    parser.add_argument("--url", action="append", metavar="HOST:PORT",
                        help=f"Triton gRPC address (default {DEFAULT_URL}); repeat it for several replicas: "
                        "frames spread over the healthy ones, a failed one's frames go to the others")
    parser.add_argument("--window", type=int, default=8,
                        help="frames in flight while streaming, per replica (default 8)")
    parser.add_argument("--shm", action="store_true", help="pass frames through system shared memory (same host)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per frame (deadline)")
    parser.add_argument("--connect-timeout", type=float, default=30.0,
                        help="seconds to wait for the server at start and after a lost connection")
    parser.add_argument("--convention", default=DEFAULT_CONVENTION, choices=CONVENTIONS, metavar="NAME",
                        help=f"how the SDR was graded: {', '.join(CONVENTIONS)} (default {DEFAULT_CONVENTION}; "
                        "bt2408 for SDR whose white belongs at 203 cd/m^2, e.g. phone photos; see the README)")
    parser.add_argument("--peak-nits", type=float, default=NETWORK_PEAK_NITS, metavar="N",
                        help="target display peak, 400-4000 cd/m^2 (default 1000: the network's grade; lower "
                        "applies the BT.2390 EETF and signals that peak)")
    parser.add_argument("--crf", type=float, default=18.0, help="x265 quality for video output (lower is better)")
    parser.add_argument("--preset", default="medium", help="x265 preset for video output")
    parser.add_argument("--tls-ca", type=Path, help="PEM root certificate(s) to verify the server (enables TLS)")
    parser.add_argument("--tls-cert", type=Path, help="PEM client certificate chain, for mutual TLS")
    parser.add_argument("--tls-key", type=Path, help="PEM client private key, for mutual TLS")
    parser.add_argument("--segment", metavar="I/N",
                        help="convert only the I-th of N equal, frame-exact parts of a video, to a part file "
                        "(no audio) with a PART.sritm.json manifest; join the parts with sritm concat")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _concat_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "concat",
        help="join the parts of a --segment conversion without re-encoding",
        description="Join the parts made by sritm convert --segment I/N, given in order 1..N, into one file "
        "without re-encoding: HEVC parts into .mkv/.mp4 with the whole film's MaxCLL/MaxFALL and the source's "
        "audio, raw parts into .yuv. Missing, repeated, misordered or unfinished parts are an error.",
    )
    parser.add_argument("output", type=Path)
    parser.add_argument("parts", type=Path, nargs="+")
    audio = parser.add_mutually_exclusive_group()
    audio.add_argument("--audio", type=Path, metavar="PATH",
                       help="take the audio from PATH (default: the source the parts name)")
    audio.add_argument("--no-audio", action="store_true", help="write no audio")


def _run_concat(args: argparse.Namespace) -> int:
    from sritm_client.segments import concat_parts  # PyAV loads only here

    frames = concat_parts(args.output, args.parts, audio_source=False if args.no_audio else (args.audio or True))
    print(f"wrote {args.output}: {frames} frame(s) from {len(args.parts)} part(s)")
    return EXIT_OK


def _run_convert(args: argparse.Namespace) -> int:
    from sritm_client.convert import check_paths, convert_file  # PyAV loads only for conversions
    from sritm_client.segments import Segment, manifest_path

    check_paths(args.input, args.output)  # a bad path fails at once, before any connection
    segment = Segment.parse(args.segment) if args.segment else None
    if segment is not None:
        manifest_path(args.output).unlink(missing_ok=True)  # unfinished until this run succeeds, whatever fails
    rendering = Rendering(args.convention, args.peak_nits)
    if args.window < 1:
        raise SritmError(f"--window must be at least 1, not {args.window}")
    tls = None
    if args.tls_ca or args.tls_cert or args.tls_key:
        tls = TlsOptions(root_certificates=args.tls_ca, private_key=args.tls_key, certificate_chain=args.tls_cert)
    progress = None
    if not args.quiet:
        from tqdm import tqdm

        progress = tqdm
    retry = RetryPolicy(deadline_s=args.connect_timeout)
    with SritmClient(
        args.url or [DEFAULT_URL], args.scale, timeout_s=args.timeout, ready_timeout_s=args.connect_timeout,
        use_shared_memory=args.shm, tls=tls, retry=retry,
    ) as client:
        result = convert_file(
            client, args.input, args.output, window=args.window, progress=progress, crf=args.crf, preset=args.preset,
            rendering=rendering, segment=segment,
        )
    (in_h, in_w), (out_h, out_w) = result.input_size, result.output_size
    if result.interrupted:
        print(f"interrupted: {result.output} holds the {result.frames} frames converted so far", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"wrote {result.output}: {result.frames} frame(s), {in_w}x{in_h} -> {out_w}x{out_h} HDR10")
    return EXIT_OK


def _probe_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "probe",
        help="a liveness check: one tiny real inference through the ensemble",
        description="Exit 0 when the server answers a 16x16 frame through sritm_x{scale} within the deadline, "
        "1 otherwise, with the reason on one line. Triton keeps reporting ready when a Python-backend stub has "
        "died, so a Kubernetes liveness probe must run an inference (deploy/k8s/).",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"Triton gRPC address (default {DEFAULT_URL})")
    parser.add_argument("--scale", type=int, choices=(2, 4), default=2)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds for the whole check (default 5)")


def _run_probe(args: argparse.Namespace) -> int:
    import numpy as np

    from sritm_client.frames import SdrFrame

    frame = SdrFrame.from_rgb8(np.full((16, 16, 3), 128, np.uint8), pts=0)
    retry = RetryPolicy(attempts=1, deadline_s=args.timeout)
    with SritmClient(args.url, args.scale, timeout_s=args.timeout, ready_timeout_s=args.timeout, retry=retry) as client:
        answer = client.convert(frame)
    if (answer.height, answer.width) != (16 * args.scale, 16 * args.scale):
        raise SritmError(f"the server answered {answer.width}x{answer.height}, not the x{args.scale} frame")
    print(f"ok: {args.url} converted a 16x16 frame through sritm_x{args.scale}")
    return EXIT_OK


def _delegate(module: str, argv: Sequence[str]) -> int:
    try:
        entry = importlib.import_module(module)
    except ImportError as error:
        raise SritmError(f"this command needs the training extra: pip install 'sritm[net]' ({error})") from None
    return int(entry.main(list(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``sritm`` with ``argv`` (default: the process's arguments); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # train/evaluate own their arguments; hand them over untouched.
    if argv and argv[0] in ("train", "evaluate"):
        try:
            return _delegate(f"gpgmnet.{argv[0]}", argv[1:])
        except SritmError as error:
            print(f"sritm: error: {error}", file=sys.stderr)
            return EXIT_FAILED
    parser = argparse.ArgumentParser(prog="sritm", description="SDR to HDR10 with GPGMNet on Triton.")
    subparsers = parser.add_subparsers(dest="command", metavar="{convert,concat,probe,train,evaluate}",
                                       required=True)
    _convert_parser(subparsers)
    _concat_parser(subparsers)
    _probe_parser(subparsers)
    subparsers.add_parser("train", help="train GPGMNet (sritm train --help)", add_help=False)
    subparsers.add_parser("evaluate", help="evaluate a checkpoint against the classical baseline", add_help=False)
    args = parser.parse_args(argv)
    try:
        run = {"probe": _run_probe, "concat": _run_concat, "convert": _run_convert}[args.command]
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (SritmError, OSError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        notes = getattr(error, "__notes__", None) or []
        if notes:
            message = "; ".join([message, *(str(note).strip() for note in notes)])
        print(f"sritm: error: {message}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

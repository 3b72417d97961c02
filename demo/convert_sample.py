"""``make demo``: serve the CPU repository, convert the bundled sample clip, picture the result, stop.

The clip is converted twice, once per preset people choose between most:
``bt2446a`` (the default: SDR down-converted from HDR by broadcast and
streaming tools) and ``bt2408`` (SDR whose white belongs at 203 cd/m^2, as
phone cameras grade), and the picture shows both beside the input.
It runs at ×2 by default: the shipped ×2 network is the one conditioned on
the preset (the shipped ×4 network is the paper's, which answers every preset
as ``bt2446a``; ``--scale 4`` shows it).

Run after ``make repository`` (the Makefile does both). Everything lands in
``out/``; the server runs on free loopback ports only for the demo's duration.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from sritm_client.client import SritmClient
from sritm_client.convert import convert_file
from sritm_client.errors import SritmError
from sritm_client.preview import middle_frames, save_side_by_side
from sritm_core.contract import Rendering
from sritm_serving.triton_server import ServerPorts, TritonServer, TritonServerError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "client" / "samples" / "sdr_sample.mp4"


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns 0, or 1 after one ``demo failed:`` line when the server or a conversion fails."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=SAMPLE)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "out")
    parser.add_argument("--scale", type=int, choices=(2, 4), default=2,
                        help="2 (default: the network conditioned on the preset) or 4 (the paper's network)")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    video = args.out_dir / "demo_hdr10.mkv"
    video_bt2408 = args.out_dir / "demo_hdr10_bt2408.mkv"
    picture = args.out_dir / "demo_side_by_side.png"
    server_log = args.out_dir / "tritonserver.log"
    log_path = server_log
    log_path.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        print(f"starting Triton on {args.repository} ...", flush=True)
        with TritonServer(args.repository, ServerPorts.free(), log_path=log_path) as server:
            print(f"Triton ready in {server.startup_seconds:.1f} s (gRPC {server.grpc_url})", flush=True)
            with SritmClient(server.grpc_url, args.scale) as client:
                result = convert_file(client, args.input, video, window=4, progress=tqdm, preset="fast")
                convert_file(client, args.input, video_bt2408, window=4, progress=tqdm, preset="fast",
                             rendering=Rendering("bt2408"))
        print("Triton stopped", flush=True)
        sdr, hdr = middle_frames(args.input, video, result.frames)
        _, hdr_bt2408 = middle_frames(args.input, video_bt2408, result.frames)
        save_side_by_side(sdr, {"--convention bt2446a": hdr, "--convention bt2408": hdr_bt2408}, picture,
                          title=f"sritm demo: {args.input.name}, GPGMNet x{args.scale}")
    except (SritmError, TritonServerError, OSError, ValueError) as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1
    (in_h, in_w), (out_h, out_w) = result.input_size, result.output_size
    print(
        f"\nconverted {result.frames} frames {in_w}x{in_h} -> {out_w}x{out_h} in {time.monotonic() - started:.0f} s\n"
        f"  HDR10 video:   {video} (bt2446a), {video_bt2408} (bt2408)\n"
        f"  side by side:  {picture}\n"
        f"  server log:    {server_log}\n"
        f"check the tags with: ffprobe -hide_banner -show_streams -select_streams v {video}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

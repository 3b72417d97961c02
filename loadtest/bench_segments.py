#!/usr/bin/env python
"""Wall time of one clip converted four ways, in one run: 1 vs 2 replicas, single-process vs segmented, and concat.

Starts two Triton servers on ``--model-repository`` (default: ``model_repository/``,
from ``make repository``) on free loopback ports, then times, with the CLI as a
user runs it:

1. one ``sritm convert`` process against one server;
2. one process against both (``--url A --url B``: frames spread over the two);
3. ``--parts`` processes at once, each ``--segment I/N`` against both, then ``sritm concat``;

and prints JSON: each wall time, the concat time, and the ratios. Every server
and client shares this machine's cores, so on a small machine the ratios
measure contention as much as scaling; on a cluster the servers and the client
pods have cores of their own. Not a test.

    python -m loadtest.bench_segments --source client/samples/sdr_sample.mp4 --scale 2 --parts 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sritm_serving.triton_server import ServerPorts, TritonServer

ROOT = Path(__file__).resolve().parent.parent


def sritm(*args: str | Path) -> list[str]:
    """The command line of ``sritm ARGS`` with this interpreter."""
    return [sys.executable, "-m", "sritm_client.cli", *map(str, args)]


def timed(commands: list[list[str]]) -> float:
    """Seconds until every command, started together, has finished (each must succeed)."""
    started = time.perf_counter()
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for command in commands]
    for process, command in zip(processes, commands):
        _, err = process.communicate()
        if process.returncode:
            raise SystemExit(f"{' '.join(command)} failed: {err.strip()}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison and prints its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT / "client" / "samples" / "sdr_sample.mp4")
    parser.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--scale", type=int, choices=(2, 4), default=2)
    parser.add_argument("--parts", type=int, default=2)
    parser.add_argument("--extension", choices=("mkv", "mp4", "yuv"), default="mkv")
    parser.add_argument("--preset", default="fast", help="x265 preset (default fast)")
    args = parser.parse_args(argv)
    if not (args.model_repository / "sritm_x2").is_dir():
        raise SystemExit(f"{args.model_repository} has no sritm ensemble: run `make repository` first")
    common = ["--scale", str(args.scale), "--preset", args.preset, "--quiet"]
    with tempfile.TemporaryDirectory(prefix="sritm-segments-") as folder:
        work = Path(folder)
        with TritonServer(args.model_repository, ServerPorts.free(), log_path=work / "a.log") as first, \
                TritonServer(args.model_repository, ServerPorts.free(), log_path=work / "b.log") as second:
            both = ["--url", first.grpc_url, "--url", second.grpc_url]
            out = work / f"film.{args.extension}"
            timed([sritm("convert", args.source, out, "--url", first.grpc_url, *common)])  # warm both servers
            timed([sritm("convert", args.source, out, "--url", second.grpc_url, *common)])
            one_replica = timed([sritm("convert", args.source, out, "--url", first.grpc_url, *common)])
            two_replicas = timed([sritm("convert", args.source, out, *both, *common)])
            parts = [work / f"part-{i:04d}.{args.extension}" for i in range(1, args.parts + 1)]
            segmented = timed([sritm("convert", args.source, part, "--segment", f"{i}/{args.parts}", *both, *common)
                               for i, part in enumerate(parts, start=1)])
            concat = timed([sritm("concat", work / f"joined.{args.extension}", *parts)])
    print(json.dumps({
        "source": str(args.source), "scale": args.scale, "parts": args.parts, "output": args.extension,
        "preset": args.preset,
        "seconds": {"one_process_one_replica": round(one_replica, 2),
                    "one_process_two_replicas": round(two_replicas, 2),
                    "segmented_two_replicas": round(segmented, 2), "concat": round(concat, 2)},
        "speedup": {"two_replicas_vs_one": round(one_replica / two_replicas, 2),
                    "segmented_plus_concat_vs_one_process": round(two_replicas / (segmented + concat), 2)},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""NVIDIA's perf_analyzer against the ensembles, also where the system glibc is older than it needs.

``perf-analyzer==2.60.0`` ships its binary in a ``manylinux_2_38`` wheel: it
needs glibc >= 2.38 and a matching libstdc++, and Debian 12 has 2.36. Where the
system is new enough the binary runs as it is. Elsewhere it runs through
Debian 13's dynamic loader and libraries, downloaded with ``apt-get download``
(a private sources list and state directory: nothing is installed
system-wide) and unpacked with ``dpkg-deb -x`` into the cache:

    <cache>/ld-linux-x86-64.so.2 --library-path <debian 13 libs>:/usr/lib/x86_64-linux-gnu perf_analyzer ...

Everything lands in ``~/.cache/sritm/perf_analyzer`` (``SRITM_PERF_ANALYZER_CACHE``).
It is NVIDIA's own client, so it cross-checks the project's Locust and
benchmark figures (``make capacity``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VERSION = "2.60.0"
GLIBC_NEEDED = (2, 38)
DEBIAN_SUITE = "trixie"
DEBIAN_PACKAGES = ("libc6", "libstdc++6", "libgcc-s1")
MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SYSTEM_LIBS = "/usr/lib/x86_64-linux-gnu"


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer could not be fetched or run; the message says which step failed."""


def cache_dir() -> Path:
    """Where the wheel and, when needed, Debian 13's libraries are kept."""
    return Path(os.environ.get("SRITM_PERF_ANALYZER_CACHE", "~/.cache/sritm/perf_analyzer")).expanduser()


def system_glibc() -> tuple[int, int]:
    """The running glibc's (major, minor)."""
    name = os.confstr("CS_GNU_LIBC_VERSION") or "glibc 0.0"
    major, minor = name.split()[-1].split(".")[:2]
    return int(major), int(minor)


def _run(command: list[str], what: str, timeout_s: float = 300.0) -> None:
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise PerfAnalyzerError(f"{what} failed: {last}")


def _binary(root: Path) -> Path:
    """perf_analyzer from the pinned wheel, unpacked (pip would refuse the wheel's platform tag here)."""
    binary = root / "wheel" / "perf_analyzer" / "bin" / "perf_analyzer"
    if binary.is_file():
        return binary
    download = root / "download"
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
          "--platform", "manylinux_2_38_x86_64", "--python-version", "3.11", f"perf-analyzer=={VERSION}",
          "--dest", str(download)], f"pip download perf-analyzer=={VERSION}")
    (wheel,) = download.glob(f"perf_analyzer-{VERSION}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(root / "wheel")
    binary.chmod(0o755)
    return binary


def _debian_libraries(root: Path) -> Path:
    """Debian 13's glibc, libstdc++ and libgcc, unpacked into the cache; returns their library folder."""
    libraries = root / "debian" / "usr" / "lib" / "x86_64-linux-gnu"
    if (libraries / "ld-linux-x86-64.so.2").is_file():
        return libraries
    apt = root / "apt"
    for folder in ("state/lists/partial", "cache/archives/partial", "debs"):
        (apt / folder).mkdir(parents=True, exist_ok=True)
    sources = apt / "sources.list"
    sources.write_text(f"deb [signed-by={KEYRING}] {MIRROR} {DEBIAN_SUITE} main\n")
    options = [f"-o=Dir::Etc::SourceList={sources}", "-o=Dir::Etc::SourceParts=/dev/null",
               f"-o=Dir::State={apt / 'state'}", f"-o=Dir::Cache={apt / 'cache'}", "-o=Debug::NoLocking=1",
               "-o=APT::Sandbox::User=root"]
    _run(["apt-get", *options, "update"], f"apt-get update ({DEBIAN_SUITE})")
    completed = subprocess.run(["apt-get", *options, "download", *DEBIAN_PACKAGES], cwd=apt / "debs",
                               capture_output=True, text=True, timeout=300)
    if completed.returncode != 0:
        raise PerfAnalyzerError(f"apt-get download {' '.join(DEBIAN_PACKAGES)} failed: {completed.stderr.strip()}")
    for package in (apt / "debs").glob("*.deb"):
        _run(["dpkg-deb", "-x", str(package), str(root / "debian")], f"dpkg-deb -x {package.name}")
    return libraries


def command_prefix() -> list[str]:
    """How to start perf_analyzer on this machine (fetching what it needs the first time)."""
    if shutil.which("apt-get") is None and system_glibc() < GLIBC_NEEDED:
        raise PerfAnalyzerError(f"glibc {system_glibc()} is older than {GLIBC_NEEDED} and there is no apt-get")
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    binary = _binary(root)
    if system_glibc() >= GLIBC_NEEDED:
        return [str(binary)]
    libraries = _debian_libraries(root)
    return [str(libraries / "ld-linux-x86-64.so.2"), "--library-path", f"{libraries}:{SYSTEM_LIBS}", str(binary)]


@dataclass(frozen=True)
class PerfPoint:
    """One concurrency level as perf_analyzer measured it."""

    concurrency: int
    inferences_per_s: float
    p50_ms: float
    p95_ms: float


def input_data(path: Path, height: int, width: int, seed: int = 0) -> Path:
    """A perf_analyzer ``--input-data`` file: one random I420 frame and the default rendering inputs."""
    frame = np.random.default_rng(seed).integers(16, 236, (height * 3 // 2, width), dtype=np.uint8)
    path.write_text(json.dumps({"data": [{
        "SDR_I420": {"content": frame.reshape(-1).tolist(), "shape": list(frame.shape)},
        "CONVENTION": ["bt2446a"],
        "PEAK_NITS": [1000.0],
    }]}))
    return path


def measure(url: str, model: str, height: int, width: int, concurrency: list[int], work: Path,
            interval_ms: int = 5000, stability_percentage: int = 20) -> list[PerfPoint]:
    """perf_analyzer on ``model`` over gRPC at each concurrency, time-windowed, stable to ``stability_percentage``.

    Raises:
        PerfAnalyzerError: it could not be fetched, or it failed (the message has its last line).
    """
    data = input_data(work / f"perf_input_{height}x{width}.json", height, width)
    report = work / f"perf_{model}_{height}x{width}.csv"
    command = [*command_prefix(), "-m", model, "-u", url, "-i", "grpc", "--input-data", str(data),
               "--concurrency-range", f"{min(concurrency)}:{max(concurrency)}:1", "--measurement-interval",
               str(interval_ms), "--stability-percentage", str(stability_percentage), "--max-trials", "5",
               "--percentile", "95", "-f", str(report)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if completed.returncode != 0:
        last = (completed.stdout + completed.stderr).strip().splitlines() or ["no output"]
        raise PerfAnalyzerError(f"perf_analyzer failed: {last[-1]}")
    points = []
    with report.open() as rows:
        for row in csv.DictReader(rows):
            points.append(PerfPoint(int(row["Concurrency"]), float(row["Inferences/Second"]),
                                    float(row["p50 latency"]) / 1000.0, float(row["p95 latency"]) / 1000.0))
    return [point for point in points if point.concurrency in concurrency]


def main(argv: list[str] | None = None) -> int:
    """``python loadtest/perf_analyzer.py --url HOST:PORT``: prints and writes perf_analyzer's figures (JSON)."""
    import argparse
    from dataclasses import asdict

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="Triton gRPC address")
    parser.add_argument("--model", default="sritm_x4")
    parser.add_argument("--size", default="136x240", help="low-resolution HEIGHTxWIDTH (default 136x240)")
    parser.add_argument("--concurrency", default="1,2", help="comma-separated (default 1,2)")
    parser.add_argument("--interval-ms", type=int, default=5000, help="measurement window (default 5000)")
    parser.add_argument("--stability", type=int, default=20,
                        help="perf_analyzer's --stability-percentage (default 20; loosen it on a shared machine)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    height, width = (int(part) for part in args.size.lower().split("x"))
    work = (args.json.parent if args.json else Path.cwd())
    work.mkdir(parents=True, exist_ok=True)
    try:
        points = measure(args.url, args.model, height, width, [int(c) for c in args.concurrency.split(",")],
                         work, args.interval_ms, args.stability)
    except (PerfAnalyzerError, subprocess.TimeoutExpired) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = {"tool": f"perf_analyzer {VERSION}", "glibc": ".".join(map(str, system_glibc())),
              "via_debian_13_loader": system_glibc() < GLIBC_NEEDED, "model": args.model, "size": args.size,
              "points": [asdict(point) for point in points]}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    for point in points:
        print(f"{args.model} {args.size} concurrency {point.concurrency}: {point.inferences_per_s:.2f} inferences/s, "
              f"p50 {point.p50_ms:.1f} ms, p95 {point.p95_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

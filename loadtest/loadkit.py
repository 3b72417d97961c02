"""What the load tests, the capacity report and the benchmarks share: frames, server memory, Prometheus metrics.

Imported by ``locustfile.py`` (Locust puts the locustfile's folder on
``sys.path``), ``run_locust.py``, ``capacity.py`` and ``bench.py``. It imports
neither torch nor gevent, and ``sritm_client`` only where frames are made.
"""

from __future__ import annotations

import csv
import re
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from sritm_client import SdrFrame

ROOT = Path(__file__).resolve().parent.parent
REPORTS_DIR = ROOT / "loadtest" / "reports"
DEFAULT_REPOSITORY = ROOT / "model_repository"

# --------------------------------------------------------------------------- frames


def parse_size(text: str) -> tuple[int, int]:
    """``"68x120"`` -> ``(68, 120)``: a low-resolution HEIGHTxWIDTH, both even (I420 needs it)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"a frame size is HEIGHTxWIDTH, e.g. 68x120, not {text!r}")
    height, width = int(match.group(1)), int(match.group(2))
    if height % 2 or width % 2 or height < 2 or width < 2:
        raise ValueError(f"frame sizes must be even (I420), not {height}x{width}")
    return height, width


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"68x120,136x240"`` -> ``[(68, 120), (136, 240)]``, each part read by :func:`parse_size`; blanks skipped."""
    return [parse_size(part) for part in text.split(",") if part.strip()]


def size_label(size: tuple[int, int]) -> str:
    """``(68, 120)`` -> ``"68x120"``."""
    return f"{size[0]}x{size[1]}"


def random_i420(height: int, width: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """A legal-range 8-bit I420 buffer of noise: no stage can take a shortcut on it."""
    return rng.integers(16, 236, size=(height * 3 // 2, width), dtype=np.uint8)


def random_i420_frames(size: tuple[int, int], count: int, seed: int = 0) -> list[NDArray[np.uint8]]:
    """``count`` distinct noise I420 buffers of ``size``: the same ones for the same size and ``seed``."""
    rng = np.random.default_rng([seed, size[0], size[1]])
    return [random_i420(size[0], size[1], rng) for _ in range(count)]


def sdr_frames(size: tuple[int, int], count: int, seed: int = 0) -> list[SdrFrame]:
    """``count`` distinct SDK frames of one size, with pts 0..count-1."""
    from sritm_client import SdrFrame

    return [SdrFrame.from_i420(buffer, pts) for pts, buffer in enumerate(random_i420_frames(size, count, seed))]


# --------------------------------------------------------------------------- server memory


def process_tree_memory(pid: int) -> dict[str, int]:
    """RSS and PSS (bytes) of ``pid`` and all its descendants: tritonserver and its Python-backend stubs.

    RSS counts the shared-memory pages the server and its stubs both map once
    per process; PSS divides them among the sharers, so its sum is the real total.
    """
    import psutil

    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    rss = pss = count = 0
    for process in processes:
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        except psutil.AccessDenied:
            info = process.memory_info()
        rss += int(info.rss)
        pss += int(getattr(info, "pss", info.rss))
        count += 1
    return {"rss": rss, "pss": pss, "processes": count}


@dataclass
class MemorySampler:
    """Samples :func:`process_tree_memory` of a server every ``interval_s`` seconds on a thread.

    ``samples`` holds ``(seconds since start, rss, pss, processes)``; ``mark(label)``
    records the time of a phase change so peaks can be taken per phase.
    """

    pid: int
    interval_s: float = 2.0
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _started: float = field(default=0.0, repr=False)

    def start(self) -> MemorySampler:
        """Start sampling on a daemon thread; sample times count from now. Returns the sampler."""
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def elapsed(self) -> float:
        """Seconds since :meth:`start`."""
        return time.monotonic() - self._started

    def sample(self) -> None:
        """Append one sample now; once the server process is gone, append nothing."""
        try:
            memory = process_tree_memory(self.pid)
        except Exception:  # the server is gone (stopped or crashed): nothing to sample
            return
        self.samples.append((self.elapsed(), memory["rss"], memory["pss"], memory["processes"]))

    def mark(self, label: str) -> None:
        """Take a sample and record ``label`` at the current time."""
        self.sample()
        self.marks.append((self.elapsed(), label))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        """Stop the thread (waiting up to 10 s for it) and take a last sample."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sample()

    def peak_rss(self, start: float = 0.0, end: float = float("inf")) -> int:
        """The highest RSS (bytes) sampled from ``start`` to ``end`` seconds, or 0 where nothing was sampled."""
        return max((rss for t, rss, _, _ in self.samples if start <= t <= end), default=0)

    def peak_pss(self, start: float = 0.0, end: float = float("inf")) -> int:
        """The highest PSS (bytes) sampled from ``start`` to ``end`` seconds, or 0 where nothing was sampled."""
        return max((pss for t, _, pss, _ in self.samples if start <= t <= end), default=0)

    def write_csv(self, path: Path, offset_s: float = 0.0) -> None:
        """Write the samples to ``path`` as CSV, with ``offset_s`` subtracted from their times."""
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["seconds", "rss_bytes", "pss_bytes", "processes"])
            for t, rss, pss, processes in self.samples:
                writer.writerow([f"{t - offset_s:.2f}", rss, pss, processes])


def mib(value: float) -> float:
    """Bytes -> MiB, rounded to one decimal."""
    return round(value / 2**20, 1)


# --------------------------------------------------------------------------- Prometheus metrics

# The per-model counters of Triton's /metrics (cumulative since start; durations in µs).
MODEL_COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape_metrics(url: str, timeout_s: float = 10.0) -> str:
    """The text of a Prometheus endpoint such as Triton's ``/metrics``."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return str(response.read().decode())


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """Parse a Prometheus scrape into ``{model: {counter: value}}``.

    The counters of :data:`MODEL_COUNTERS` are summed over model versions. Every
    other sample goes under the model ``""``, keyed by its name and its labels.
    """
    result: dict[str, dict[str, float]] = defaultdict(dict)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        label_map = dict(_LABEL.findall(labels or ""))
        model = label_map.get("model", "") if name in MODEL_COUNTERS else ""
        key = name if model or not label_map else f"{name}{{{labels}}}"
        result[model][key] = result[model].get(key, 0.0) + number
    return dict(result)


def metrics_delta(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Per model, what each counter grew by between two scrapes (models with no new request are left out)."""
    delta: dict[str, dict[str, float]] = {}
    for model, counters in after.items():
        if not model:
            continue
        grown = {name: value - before.get(model, {}).get(name, 0.0) for name, value in counters.items()}
        if grown.get("nv_inference_request_success", 0.0) or grown.get("nv_inference_request_failure", 0.0):
            delta[model] = grown
    return delta


def where_time_goes(delta: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per model, the mean milliseconds per successful request: total, queue, compute (input/infer/output)."""
    table: dict[str, dict[str, float]] = {}
    for model, counters in sorted(delta.items()):
        requests = counters.get("nv_inference_request_success", 0.0)
        if requests <= 0:
            continue

        def per_request(name: str, counters: dict[str, float] = counters, requests: float = requests) -> float:
            return round(counters.get(name, 0.0) / requests / 1e3, 2)

        table[model] = {
            "requests": requests,
            "failures": counters.get("nv_inference_request_failure", 0.0),
            "executions": counters.get("nv_inference_exec_count", 0.0),
            "request_ms": per_request("nv_inference_request_duration_us"),
            "queue_ms": per_request("nv_inference_queue_duration_us"),
            "compute_input_ms": per_request("nv_inference_compute_input_duration_us"),
            "compute_infer_ms": per_request("nv_inference_compute_infer_duration_us"),
            "compute_output_ms": per_request("nv_inference_compute_output_duration_us"),
        }
    return table


def where_time_goes_markdown(table: dict[str, dict[str, float]]) -> list[str]:
    """The lines of a Markdown table of :func:`where_time_goes`' result, one row per model."""
    lines = [
        "| model | requests | executions | request ms | queue ms "
        "| compute input ms | compute infer ms | compute output ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, row in table.items():
        lines.append(
            f"| {model} | {row['requests']:.0f} | {row['executions']:.0f} | {row['request_ms']} | {row['queue_ms']} "
            f"| {row['compute_input_ms']} | {row['compute_infer_ms']} | {row['compute_output_ms']} |"
        )
    return lines


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, NaN where there are none."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def json_ready(value: Any) -> Any:
    """``value`` with every float rounded to 3 decimals, inside dicts, lists and tuples too (tuples become lists)."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value

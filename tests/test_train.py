"""Tests for gpgmnet.train: determinism and resuming, checkpoints, logs, settings and error messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import cv2  # noqa: E402
import torch  # noqa: E402

from gpgmnet import train  # noqa: E402
from gpgmnet.arch import GPGMNet  # noqa: E402
from gpgmnet.checkpoint import load_network, read_checkpoint, save_checkpoint  # noqa: E402

from processes import read_until_progress  # noqa: E402


def write_scene(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((64, 96, 3)).astype(np.float32)
    rgb = np.exp(0.7 * noise + cv2.GaussianBlur(noise, (0, 0), 5.0) * 6.0) * np.float32(0.3)
    rgb[10:13, 20:23] = 300.0
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    for index in range(4):
        write_scene(folder / f"s{index}.hdr", index)
    (folder / "split.json").write_text(json.dumps({"train": ["s0", "s1", "s2"], "val": ["s3"]}))
    return folder


def tiny_args(scenes: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--scenes", str(scenes), "--split-file", str(scenes / "split.json"), "--scale", "4",
        "--batch-size", "2", "--workers", "0", "--cache-dir", str(cache), "--out", str(out), "--quiet",
        "--set", "hr_patch=32", "--set", "val_crop=32", "--set", "exposure_variants=2",
        "--val-every", "2", "--checkpoint-every", "2", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-step run, and the same run done as 2 steps then resumed for 1 (with other loader workers)."""
    work = tmp_path_factory.mktemp("runs")
    cache = work / "cache"
    whole, part = work / "whole" / "ck.pt", work / "part" / "ck.pt"
    assert train.main(tiny_args(scenes, cache, whole, "--iterations", "3", "--workers", "1")) == 0
    assert train.main(tiny_args(scenes, cache, part, "--iterations", "2")) == 0
    after_two = work / "part" / "after_two.pt"
    after_two.write_bytes(part.read_bytes())
    assert train.main(["--resume", str(part), "--iterations", "3", "--quiet"]) == 0
    return {"whole": whole, "resumed": part, "after_two": after_two}


def test_resumed_run_equals_uninterrupted_run(runs: dict[str, Path]) -> None:
    whole, resumed = read_checkpoint(runs["whole"]), read_checkpoint(runs["resumed"])
    assert whole["step"] == resumed["step"] == 3
    assert read_checkpoint(runs["after_two"])["step"] == 2
    assert whole["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert whole["loss_history"] == resumed["loss_history"] and len(whole["loss_history"]) == 3
    for a, b in zip(whole["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert [s for s, _ in whole["val_history"]] == [2, 3] == [s for s, _ in resumed["val_history"]]
    assert whole["val_history"] == resumed["val_history"]


def test_training_changes_the_weights(runs: dict[str, Path]) -> None:
    torch.manual_seed(0)
    initial = GPGMNet(scale=4).state_dict()
    trained = read_checkpoint(runs["whole"])["state_dict"]
    assert not torch.equal(initial["conv_first.weight"], trained["conv_first.weight"])


def test_checkpoint_round_trip(runs: dict[str, Path]) -> None:
    payload = read_checkpoint(runs["whole"])
    assert payload["scale"] == 4 and payload["config"] == {"scale": 4}
    assert payload["train_config"]["batch_size"] == 2 and payload["train_config"]["lr"] == 1e-4
    network, meta = load_network(runs["whole"], 4)
    assert meta["step"] == 3 and "state_dict" not in meta
    for key, value in network.state_dict().items():
        assert torch.equal(value, payload["state_dict"][key]), key
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert network(x).shape == (1, 3, 32, 32)


def test_log_and_loss_curve_beside_the_checkpoint(runs: dict[str, Path]) -> None:
    log_json, png = train.log_paths(runs["resumed"])
    assert log_json.name == "ck.log.json" and png.name == "ck.loss.png"
    document = json.loads(log_json.read_text())
    assert document["step"] == 3 and len(document["loss"]) == 3
    assert [s for s, _ in document["val_psnr"]] == [2, 3]
    assert all(10.0 < p < 60.0 for _, p in document["val_psnr"])
    assert document["seconds_per_step"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resuming_a_finished_run_does_nothing(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    before = runs["whole"].read_bytes()
    assert train.main(["--resume", str(runs["whole"]), "--quiet"]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert runs["whole"].read_bytes() == before


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ")
    return err[-1]


def test_checkpoint_errors_are_one_line(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train.main(["--resume", str(runs["whole"]), "--scale", "2", "--quiet"]) == 2
    assert "is for x4, not x2" in error_line(capsys)
    assert train.main(["--resume", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in error_line(capsys)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    assert train.main(["--resume", str(corrupt)]) == 2
    assert "corrupt" in error_line(capsys)
    weights_only = tmp_path / "weights_only.pt"
    save_checkpoint(weights_only, GPGMNet(scale=4), {"scale": 4}, 0)
    assert train.main(["--resume", str(weights_only)]) == 2
    assert "no training state" in error_line(capsys)


def test_data_and_setting_errors_are_one_line(
    scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = tiny_args(empty, tmp_path / "cache", tmp_path / "ck.pt", "--iterations", "1")
    assert train.main(args) == 2
    assert "holds no HDR images" in error_line(capsys)
    (empty / "broken.exr").write_bytes(b"nope")
    (empty / "split.json").write_text(json.dumps({"train": ["broken"], "val": []}))
    assert train.main(args) == 2
    assert "no readable HDR images" in error_line(capsys)
    assert any("broken.exr" in r.getMessage() for r in caplog.records)  # warned about by name first
    args = tiny_args(scenes, tmp_path / "cache", tmp_path / "ck.pt", "--iterations", "1")
    assert train.main([*args, "--set", "batchsize=4"]) == 2
    assert "unknown setting 'batchsize'" in error_line(capsys)
    assert train.main([*args, "--set", "model.modulation=nonsense"]) == 2
    assert "bad model settings" in error_line(capsys)
    assert train.main(
        [*args, "--device", "cuda:7"] if not torch.cuda.is_available() else [*args, "--device", "tpu"]
    ) == 2
    error_line(capsys)
    assert train.main([*args, "--kim", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in error_line(capsys)


def test_settings_resolution(tmp_path: Path) -> None:
    parser = train.build_parser()
    config, payload = train.resolve_config(parser.parse_args([
        "--scale", "2", "--set", "model.modulation=gfm", "--set", "lr_milestones=[100, 200]",
        "--set", "val_crop=96", "--out", str(tmp_path / "x{scale}.pt"),
    ]))  # fmt: skip
    assert payload is None
    assert config["scale"] == 2 and config["model"] == {"modulation": "gfm"}
    assert config["lr_milestones"] == [100, 200] and config["val_crop"] == 96
    assert config["out"] == str(tmp_path / "x2.pt")
    assert Path(config["split_file"]) == train.REPO_ROOT / "gpgmnet" / "splits" / "hdr_scenes.json"
    assert train.learning_rate(config, 99) == pytest.approx(1e-4)
    assert train.learning_rate(config, 100) == pytest.approx(1e-5)
    assert train.learning_rate(config, 250) == pytest.approx(1e-6)
    assert train.parse_value("3") == 3 and train.parse_value("true") is True and train.parse_value("abc") == "abc"


@pytest.mark.parametrize("scale", [2, 4])
def test_shipped_configs_hold_the_papers_settings(scale: int) -> None:
    config = train.read_config_file(train.CONFIG_DIR / f"train_x{scale}.json")
    assert set(config) <= set(train.DEFAULTS)
    assert config["scale"] == scale and config["loss"] == "l2" and config["lr"] == 1e-4
    assert config["batch_size"] == 32 and config["iterations"] == 290_000 and config["hr_patch"] == 160


def test_training_in_process_leaves_the_signal_handlers_as_it_found_them(scenes: Path, tmp_path: Path) -> None:
    """The DataLoader of torch installs a SIGCHLD handler for good; ``main`` puts the process's own back."""
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGCHLD)}
    args = tiny_args(scenes, tmp_path / "cache", tmp_path / "ck.pt", "--iterations", "1", "--workers", "1")
    assert train.main(args) == 0
    assert {number: signal.getsignal(number) for number in before} == before


@pytest.mark.parametrize("whole_group", [False, True], ids=["trainer", "process-group"])
def test_sigterm_saves_a_resumable_checkpoint(scenes: Path, tmp_path: Path, whole_group: bool) -> None:
    """`kill` (SIGTERM) stops a run like Ctrl-C: it saves where it is and exits 130.

    Also when the whole process group gets it, data-loading workers included, as
    a scheduler (or Kubernetes) sends it: the workers must not die first.
    """
    out = tmp_path / "run" / "ck.pt"
    # fp32: bf16 autocast was seen to spend minutes creating oneDNN primitives on a loaded machine.
    args = tiny_args(scenes, tmp_path / "cache", out, "--iterations", "100000", "--checkpoint-every", "100000",
                     "--workers", "1" if whole_group else "0", "--set", "precision=fp32")
    args[args.index("--quiet")] = "--val-every"
    args.insert(args.index("--val-every") + 1, "100000")
    process = subprocess.Popen(
        [sys.executable, "-m", "gpgmnet.train", *args], stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=whole_group,
    )
    try:
        _stop_with_sigterm(process, whole_group)
    finally:
        if process.poll() is None:  # a failed assertion must not leave a 100,000-step run behind
            os.killpg(process.pid, signal.SIGKILL) if whole_group else process.kill()
            process.wait()
    assert read_checkpoint(out)["step"] >= 3


def _stop_with_sigterm(process: subprocess.Popen[str], whole_group: bool) -> None:
    seen = read_until_progress(process, 100000, 3)
    if whole_group:
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.send_signal(signal.SIGTERM)
    remaining = process.stderr.read()
    assert process.wait(timeout=60) == 130, seen + remaining
    assert "continue with --resume" in remaining


# --------------------------------------------------------------------------
# the SDR-convention condition

CONVENTION_NAMES = ("bt2446a", "bt2408", "bt2446c", "reinhard", "drago", "mantiuk", "hable")  # the served order


@pytest.fixture(scope="module")
def paper_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GPGMNet]:
    """A seeded paper-form x4 network (no conventions), saved the way sritm train saves one."""
    torch.manual_seed(21)
    network = GPGMNet(scale=4).eval()
    path = tmp_path_factory.mktemp("paper") / "paper_x4.pt"
    save_checkpoint(path, network, {"scale": 4}, 1234)
    return path, network


def test_conditioned_network_initialised_from_paper_form_starts_as_the_source(
    paper_checkpoint: tuple[Path, GPGMNet],
) -> None:
    path, source = paper_checkpoint
    torch.manual_seed(99)
    target = GPGMNet(scale=4, conventions=len(CONVENTION_NAMES)).eval()
    x = torch.rand(1, 3, 5, 7).repeat(len(CONVENTION_NAMES), 1, 1, 1)
    every_convention = torch.eye(len(CONVENTION_NAMES))
    with torch.no_grad():
        expected = source(x)
        assert (target(x, every_convention) - expected).abs().max() > 1e-3  # a fresh network differs
    copied = train.initialise_from(target, path)
    assert copied == len(source.state_dict())  # every tensor, the widened Linear weights included
    with torch.no_grad():
        actual = target(x, every_convention)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    for i in range(1, len(CONVENTION_NAMES)):
        torch.testing.assert_close(actual[i], actual[0], rtol=0, atol=1e-6)
    source_state, target_state = source.state_dict(), target.state_dict()
    widened = [k for k in source_state if source_state[k].shape != target_state[k].shape]
    assert len(widened) == 2 * 5  # scale and shift mapping of each of the 5 JMRMs
    for key in widened:
        old, new = source_state[key], target_state[key]
        assert new.shape == (old.shape[0], old.shape[1] + len(CONVENTION_NAMES))
        assert (torch.equal(new[:, : old.shape[1]], old)
                and torch.equal(new[:, old.shape[1] :], torch.zeros_like(new[:, old.shape[1] :])))
    for key in source_state.keys() - set(widened):
        assert torch.equal(target_state[key], source_state[key]), key


def test_initialised_condition_columns_learn(paper_checkpoint: tuple[Path, GPGMNet]) -> None:
    """The zero columns are a starting point, not a frozen part: one Adam step moves them."""
    path, _ = paper_checkpoint
    target = GPGMNet(scale=4, conventions=len(CONVENTION_NAMES)).train()
    train.initialise_from(target, path)
    optimizer = torch.optim.Adam(target.parameters(), lr=1e-3)
    x = torch.rand(2, 3, 4, 4)
    convention = train.convention_input(target, torch.tensor([1, 4]))
    torch.nn.functional.mse_loss(target(x, convention), torch.rand(2, 3, 16, 16)).backward()
    optimizer.step()
    weight = target.get_submodule("body.2.modulation.shift_mapping").get_parameter("weight")
    assert weight[:, -7:][:, [1, 4]].abs().max() > 0
    assert torch.equal(weight[:, -7:][:, [0, 2, 3, 5, 6]], torch.zeros(64, 5))


def test_convention_input_is_the_one_hot_of_the_grading_indices() -> None:
    assert train.convention_input(GPGMNet(scale=2, num_features=8, num_modules=1), torch.tensor([0, 3])) is None
    network = GPGMNet(scale=2, num_features=8, num_modules=1, conventions=len(CONVENTION_NAMES))
    one_hot = train.convention_input(network, torch.tensor([6, 0, 1], dtype=torch.int32))
    assert one_hot is not None and one_hot.dtype == torch.float32
    assert torch.equal(one_hot, torch.tensor([[0, 0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0]],
                                             dtype=torch.float32))


def test_autocast_dtype_follows_the_precision_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert train.autocast_dtype({"precision": "fp32"}, cpu) is None
    assert train.autocast_dtype({"precision": "bf16"}, cpu) is torch.bfloat16
    assert train.autocast_dtype({"precision": "bf16"}, cuda) is None  # autocast only on the CPU path
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: True)
    assert train.autocast_dtype({"precision": "auto"}, cpu) is torch.bfloat16
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: False)
    assert train.autocast_dtype({"precision": "auto"}, cpu) is None
    monkeypatch.undo()
    assert isinstance(train.cpu_has_bf16(), bool)
    config = {**train.DEFAULTS, "precision": "fp16"}
    with pytest.raises(train.TrainError, match="precision must be auto, bf16 or fp32"):
        train.check_config(config)
    with pytest.raises(train.TrainError, match="unknown val_gradings"):
        train.check_config({**train.DEFAULTS, "val_gradings": ["bt2446a", "youtube"]})


def test_graded_run_trains_a_conditioned_network(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "graded" / "ck.pt"
    args = tiny_args(scenes, tmp_path / "cache", out, "--iterations", "1", "--set", "graded=true",
                     "--set", 'val_gradings=["hable"]', "--set", "val_compressed=true",
                     "--set", "exposure_variants=1", "--set", "precision=fp32")
    assert train.main(args) == 0
    payload = read_checkpoint(out)
    assert payload["step"] == 1 and payload["config"] == {"scale": 4, "conventions": 7}
    assert payload["conventions"] == list(CONVENTION_NAMES)
    ((_, by_set),) = payload["val_by_set_history"]
    assert set(by_set) == {"hable", "hable+h264"}
    assert all(10.0 < p < 60.0 for p in by_set.values())
    network, _ = load_network(out, 4)
    assert network.conventions == 7
    with torch.no_grad():
        assert network(torch.rand(1, 3, 4, 4), torch.eye(7)[[5]]).shape == (1, 3, 16, 16)

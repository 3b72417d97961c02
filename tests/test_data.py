"""Tests for gpgmnet.data: pair formation from HDR masters, crops, caches, the split, Kim et al.'s loader."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import cv2  # noqa: E402
import torch  # noqa: E402

from gpgmnet import data  # noqa: E402
from sritm_core import colour  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------
# helpers


def textured_scene(height: int, width: int, seed: int = 0, sun: float = 0.0) -> np.ndarray:
    """Scene-linear RGB with texture at every scale, colours, and optionally a small very bright 'sun'."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 6.0) * 8.0
    rgb = np.exp(0.8 * noise + smooth).astype(np.float32) * np.float32(0.2)
    if sun:
        rgb[height // 3 : height // 3 + 4, width // 2 : width // 2 + 4] = sun
    return rgb


def write_hdr(path: Path, rgb: np.ndarray) -> Path:
    """Write scene-linear RGB as a Radiance .hdr file (OpenCV wants BGR)."""
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1], dtype=np.float32))
    return path


def scene(rgb: np.ndarray, name: str = "synthetic") -> data.Scene:
    return data.Scene(name=name, path=Path(f"/nonexistent/{name}.hdr"), rgb=rgb.astype(np.float32), primaries="bt709")


def matlab_cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    near = (1.5 * ax - 2.5) * ax * ax + 1.0
    far = ((-0.5 * ax + 2.5) * ax - 4.0) * ax + 2.0
    return np.where(ax <= 1.0, near, np.where(ax <= 2.0, far, 0.0))


def matlab_resize_matrix(length: int, factor: int) -> np.ndarray:
    """Direct implementation of MATLAB imresize's 1-D weights for scale 1/factor (bicubic, antialiasing).

    Written from MATLAB's documented algorithm: output pixel u (1-based) sits at
    x = u * factor + (1 - factor) / 2; the kernel h(t) = cubic(t / factor) / factor
    spans 4 * factor input pixels; weights are normalised; indices outside
    [1, length] are mirrored with the edge repeated ('symmetric').
    """
    out_length = length // factor
    u = np.arange(1, out_length + 1, dtype=np.float64)
    x = u * factor + 0.5 * (1 - factor)
    taps = int(np.ceil(4.0 * factor)) + 2
    left = np.floor(x - 2.0 * factor)
    index = left[:, None] + np.arange(taps)[None, :]
    weights = matlab_cubic((x[:, None] - index) / factor) / factor
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(1, length + 1), np.arange(length, 0, -1)])
    index = mirror[np.mod(index - 1, len(mirror)).astype(int)] - 1
    matrix = np.zeros((out_length, length))
    for row in range(out_length):
        np.add.at(matrix[row], index[row], weights[row])
    return matrix


@pytest.fixture()
def synthetic_dir(tmp_path: Path) -> Path:
    """Five small synthetic scenes and a split file: four for training, one for validation."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    for index in range(5):
        write_hdr(folder / f"scene{index}.hdr", textured_scene(96, 128, seed=index, sun=500.0 * (index % 2)))
    split = {"train": ["scene0", "scene1", "scene2", "scene3"], "val": ["scene4"]}
    (folder / "split.json").write_text(json.dumps(split))
    return folder


# --------------------------------------------------------------------------
# exposure


def test_exposure_puts_log_average_at_26_nits() -> None:
    rgb = np.random.default_rng(1).uniform(1.0, 10.0, (64, 64, 3))
    gain = data.exposure_gain(rgb)
    y = data.luminance(rgb)
    log_average = float(np.exp(np.mean(np.log(y))))
    assert gain * np.percentile(y, 99.5) < data.HIGHLIGHT_CAP_CD_M2
    assert gain * log_average == pytest.approx(26.0, rel=1e-9)


def test_exposure_caps_the_995th_percentile_at_4000_nits() -> None:
    rgb = np.full((100, 100, 3), 0.01)
    rgb[:2] = 100.0  # 2 % of the pixels: the 99.5th percentile is 100
    gain = data.exposure_gain(rgb)
    y = data.luminance(rgb)
    assert 26.0 / float(np.exp(np.mean(np.log(y)))) * 100.0 > 4000.0  # the log-average rule would overshoot
    assert gain * np.percentile(y, 99.5) == pytest.approx(4000.0, rel=1e-9)


def test_exposure_does_not_depend_on_the_files_scale() -> None:
    rgb = textured_scene(40, 50, seed=3, sun=1e4)
    assert data.exposure_gain(rgb * 37.0) * 37.0 == pytest.approx(data.exposure_gain(rgb), rel=1e-9)


def test_black_image_is_refused() -> None:
    with pytest.raises(data.DataError, match="no light"):
        data.exposure_gain(np.zeros((8, 8, 3)))


def test_exposure_jitter_is_within_one_stop_and_reproducible() -> None:
    jitters = data.exposure_jitters("kiara_1_dawn", seed=0, count=1000)
    assert jitters.min() >= 0.5 and jitters.max() <= 2.0
    assert np.log2(jitters).mean() == pytest.approx(0.0, abs=0.1)  # U(-1, 1) in stops
    np.testing.assert_array_equal(jitters[:4], data.exposure_jitters("kiara_1_dawn", 0, 4))
    assert not np.array_equal(jitters[:4], data.exposure_jitters("lebombo", 0, 4))
    assert not np.array_equal(jitters[:4], data.exposure_jitters("kiara_1_dawn", 1, 4))


def test_validation_pairs_are_not_jittered(tmp_path: Path) -> None:
    path = write_hdr(tmp_path / "a.hdr", textured_scene(32, 48))
    (pair,) = data.formed_pairs([path], scale=2)[0]
    assert pair.gain == pytest.approx(data.exposure_gain(data.read_scene(path).rgb))


# --------------------------------------------------------------------------
# HDR10 master and SDR grade


def pq_code(nits: float) -> float:
    return 64.0 + 876.0 * float(colour.pq_inverse_eotf(nits))


def test_master_peaks_at_1000_nits_and_keeps_midtones() -> None:
    light = np.full((8, 8, 3), 26.0, dtype=np.float32)  # 18 % grey
    light[0, 0] = 5e4  # far above the PQ range
    light[1, 1] = [3000.0, 200.0, 50.0]  # bright, coloured
    codes = data.hdr10_master(light)
    assert codes.dtype == np.uint16
    rgb = np.clip(colour.codes_to_rgb(codes.astype(np.float64), colour.BT2020, 10), 0.0, 1.0)
    nits = colour.pq_eotf(rgb)
    # The EETF maps to <= 1000 cd/m^2; rounding Y'CbCr to 10-bit codes adds at most ~1 %.
    assert nits.max() <= 1000.0 * 1.015
    assert codes[..., 0].max() <= round(pq_code(1000.0))
    assert codes[0, 0, 0] == round(pq_code(1000.0))  # the over-range white lands on the peak
    # Below the knee the EETF is the identity: grey keeps PQ(26 cd/m^2), neutral chroma.
    assert abs(int(codes[4, 4, 0]) - pq_code(26.0)) <= 0.5 + 1e-9
    assert tuple(codes[4, 4, 1:]) == (512, 512)


def test_master_without_highlights_is_not_tone_mapped() -> None:
    light = np.random.default_rng(2).uniform(0.1, 900.0, (16, 16, 3)).astype(np.float32)
    codes = data.hdr10_master(light)
    expected = colour.quantize_narrow_range(
        colour.rgb_to_codes(colour.pq_inverse_eotf(colour.bt709_to_bt2020(light)), colour.BT2020, 10), 10
    )
    np.testing.assert_array_equal(codes, expected)


def test_sdr_grade_is_legal_8_bit_bt709() -> None:
    rng = np.random.default_rng(4)
    light = rng.uniform(0.0, 1.0, (32, 32, 3)).astype(np.float32) ** 4 * 10000.0
    light[0, 0] = 0.0
    light[0, 1] = 1e4  # the content peak: the EETF takes it to the 1000 cd/m^2 master peak
    light[0, 2] = [1000.0, 0.0, 0.0]  # saturated: out of gamut once graded to BT.709
    hdr = data.hdr10_master(light)
    sdr = data.sdr_grade(hdr)
    assert sdr.dtype == np.uint8 and sdr.shape == hdr.shape
    assert sdr[..., 0].min() >= 16 and sdr[..., 0].max() <= 235
    assert sdr[..., 1:].min() >= 16 and sdr[..., 1:].max() <= 240
    assert tuple(sdr[0, 0]) == (16, 128, 128)  # black stays black
    assert sdr[0, 1, 0] >= 233 and abs(int(sdr[0, 1, 1]) - 128) <= 1  # HDR peak white -> SDR white
    assert sdr[0, 2, 2] > 200  # red stays red (Cr high)


def test_formed_pair_shapes_and_ranges() -> None:
    pair = data.form_pair(scene(textured_scene(70, 101, sun=1e5)), scale=4)
    assert pair.hdr_codes.shape == (64, 96, 3)  # centre crop to multiples of 2s = 8
    assert pair.sdr_codes is not None and pair.sdr_codes.shape == (64, 96, 3)
    assert pair.lr_i420.shape == (16 * 3 // 2, 24) and pair.lr_i420.dtype == np.uint8
    y, u, v = colour.unpack_i420(pair.lr_i420)
    assert 16 <= y.min() and y.max() <= 235 and 16 <= min(u.min(), v.min()) and max(u.max(), v.max()) <= 240
    x = pair.network_input()
    assert x.shape == (3, 16, 24) and x.dtype == np.float32
    assert pair.target().shape == (3, 64, 96) and pair.target().max() <= 940 / 1023


@pytest.mark.server
def test_lr_input_is_what_the_served_preprocessor_makes(triton_server) -> None:
    """Training sees the network input the real sritm_preprocess model makes from the same I420 frame."""
    import tritonclient.grpc as grpcclient

    pair = data.form_pair(scene(textured_scene(48, 64)), scale=2)
    frame = grpcclient.InferInput("SDR_I420", list(pair.lr_i420.shape), "UINT8")
    frame.set_data_from_numpy(np.ascontiguousarray(pair.lr_i420))
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        served = client.infer("sritm_preprocess", [frame]).as_numpy("LR_YUV")
    np.testing.assert_array_equal(pair.network_input(), served[0])


# --------------------------------------------------------------------------
# down-scaling


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("shape", [(24, 40), (8, 16), (64, 36)])
def test_imresize_down_equals_matlab_bicubic_with_antialiasing(factor: int, shape: tuple[int, int]) -> None:
    if shape[0] % factor or shape[1] % factor:
        pytest.skip("not a multiple of the factor")
    image = np.random.default_rng(5).uniform(0.0, 255.0, (*shape, 3))
    expected = np.einsum("oh,hwc->owc", matlab_resize_matrix(shape[0], factor), image)
    expected = np.einsum("pw,owc->opc", matlab_resize_matrix(shape[1], factor), expected)
    np.testing.assert_allclose(data.imresize_down(image, factor), expected, rtol=0, atol=1e-9)


def test_imresize_down_keeps_flat_images_flat() -> None:
    out = data.imresize_down(np.full((16, 24, 3), 100.0, dtype=np.float32), 4)
    assert out.shape == (4, 6, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, 100.0, atol=1e-4)


# --------------------------------------------------------------------------
# training crops


def test_training_crops_are_aligned_and_flipped_together() -> None:
    scale = 4
    pair = data.form_pair(scene(textured_scene(128, 160, seed=7)), scale)
    assert pair.sdr_codes is not None
    batches = data.ScenePatchBatches([[pair]], batch_size=8, hr_patch=32, seed=3)
    lr_full, hr_full = pair.network_input(), pair.target()
    flips_seen = set()
    for step in range(3):
        lr, hr, grading = batches[step]
        assert lr.shape == (8, 3, 8, 8) and hr.shape == (8, 3, 32, 32)
        assert torch.equal(grading, torch.zeros(8, dtype=torch.int64))  # form_pair's default grading, bt2446a
        for b, ref in enumerate(batches.refs(step)):
            assert ref.top % 2 == 0 and ref.left % 2 == 0
            window_lr = (slice(None), slice(ref.top, ref.top + 8), slice(ref.left, ref.left + 8))
            window_hr = (slice(scale * ref.top, scale * ref.top + 32), slice(scale * ref.left, scale * ref.left + 32))
            expected_lr, expected_hr = lr_full[window_lr], hr_full[(slice(None), *window_hr)]
            # Independent alignment check: the HR SDR crop, down-scaled, is the LR crop (away from the
            # crop's border, up to 8-bit rounding). One LR pixel of misalignment would be tens of codes.
            sdr_crop = pair.sdr_codes[window_hr].astype(np.float64)
            luma_from_hr = data.imresize_down(sdr_crop, scale)[2:-2, 2:-2, 0]
            assert np.abs(expected_lr[0, 2:-2, 2:-2] * 255.0 - luma_from_hr).max() <= 0.5 + 1e-3
            if ref.flip_w:
                expected_lr, expected_hr = expected_lr[:, :, ::-1], expected_hr[:, :, ::-1]
            if ref.flip_h:
                expected_lr, expected_hr = expected_lr[:, ::-1], expected_hr[:, ::-1]
            flips_seen.add((ref.flip_w, ref.flip_h))
            np.testing.assert_array_equal(lr[b].numpy(), expected_lr)
            np.testing.assert_allclose(hr[b].numpy(), expected_hr, rtol=0, atol=1e-7)
    assert len(flips_seen) >= 3


def test_batches_depend_only_on_seed_and_step() -> None:
    pairs = [[data.form_pair(scene(textured_scene(64, 64, seed=s), f"s{s}"), 2)] for s in range(3)]
    a = data.ScenePatchBatches(pairs, batch_size=4, hr_patch=16, seed=11)
    b = data.ScenePatchBatches(pairs, batch_size=4, hr_patch=16, seed=11)
    for x, y in zip(a[7], b[7]):
        assert torch.equal(x, y)
    assert not torch.equal(a[7][0], a[8][0])
    assert not torch.equal(a[7][0], data.ScenePatchBatches(pairs, 4, 16, seed=12)[7][0])


def test_patch_size_must_fit_the_scale() -> None:
    pair = data.form_pair(scene(textured_scene(64, 64)), 4)
    with pytest.raises(data.DataError, match="multiple of 2 x scale"):
        data.ScenePatchBatches([[pair]], batch_size=2, hr_patch=20, seed=0)
    with pytest.raises(data.DataError, match="large enough"):
        data.ScenePatchBatches([[pair]], batch_size=2, hr_patch=160, seed=0)


def test_center_crop_is_a_valid_aligned_frame() -> None:
    pair = data.form_pair(scene(textured_scene(96, 160, seed=8)), 2)
    crop = pair.center_crop(40)
    assert crop.hdr_codes.shape == (40, 40, 3) and crop.lr_size == (20, 20)
    top, left = (48 - 20) // 4 * 2, (80 - 20) // 4 * 2
    np.testing.assert_array_equal(crop.hdr_codes, pair.hdr_codes[2 * top : 2 * top + 40, 2 * left : 2 * left + 40])
    y, u, _ = colour.unpack_i420(crop.lr_i420)
    y_full, u_full, _ = colour.unpack_i420(pair.lr_i420)
    np.testing.assert_array_equal(y, y_full[top : top + 20, left : left + 20])
    np.testing.assert_array_equal(u, u_full[top // 2 : top // 2 + 10, left // 2 : left // 2 + 10])
    assert pair.center_crop(0) is pair


# --------------------------------------------------------------------------
# reading, folders, errors


def test_equirectangular_images_keep_their_central_band(tmp_path: Path) -> None:
    rgb = np.ones((64, 128, 3), dtype=np.float32)
    rgb[16:48] = 2.0
    read = data.read_scene(write_hdr(tmp_path / "pano.hdr", rgb))
    assert read.rgb.shape == (32, 128, 3)
    np.testing.assert_allclose(read.rgb, 2.0)
    assert data.read_scene(write_hdr(tmp_path / "flat.hdr", rgb[:, :100])).rgb.shape == (64, 100, 3)


def test_radiance_primaries_line(tmp_path: Path) -> None:
    path = write_hdr(tmp_path / "a.hdr", np.ones((4, 6, 3), dtype=np.float32))
    raw = path.read_bytes()

    def with_primaries(values: str) -> Path:
        out = tmp_path / f"p{abs(hash(values))}.hdr"
        out.write_bytes(raw.replace(b"#?RADIANCE\n", f"#?RADIANCE\nPRIMARIES={values}\n".encode(), 1))
        return out

    assert data.file_primaries(path) == "bt709"
    assert data.file_primaries(with_primaries("0 0 0 0 0 0 0 0")) == "bt709"
    assert data.read_scene(with_primaries("0.708 0.292 0.170 0.797 0.131 0.046 0.3127 0.3290")).primaries == "bt2020"
    with pytest.raises(data.DataError, match="unsupported primaries"):
        data.read_scene(with_primaries("0.7347 0.2653 0.1596 0.8404 0.0366 0.0001 0.3457 0.3585"))


def test_exr_files_are_read(tmp_path: Path) -> None:
    rgb = textured_scene(16, 24)
    path = tmp_path / "a.exr"
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    read = data.read_scene(path)
    np.testing.assert_allclose(read.rgb, rgb, rtol=1e-6)
    assert read.primaries == "bt709"


def test_unreadable_image_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_hdr(tmp_path / "good.hdr", textured_scene(32, 32))
    (tmp_path / "broken.exr").write_bytes(b"not an image at all")
    with caplog.at_level(logging.WARNING, logger="gpgmnet.data"):
        pairs = data.formed_pairs(data.scene_files(tmp_path), scale=2)
    assert [variants[0].name for variants in pairs] == ["good"]
    assert any("broken.exr" in record.getMessage() for record in caplog.records)


def test_folders_without_usable_images_are_errors(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match="does not exist"):
        data.scene_files(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(data.DataError, match="holds no HDR images"):
        data.scene_files(tmp_path)
    (tmp_path / "broken.hdr").write_bytes(b"#?RADIANCE\ngarbage")
    with pytest.raises(data.DataError, match="no readable HDR images"):
        data.formed_pairs(data.scene_files(tmp_path), scale=2)
    with pytest.raises(data.DataError, match="no readable HDR images"):
        data.load_scenes(data.scene_files(tmp_path))


# --------------------------------------------------------------------------
# caches


def test_validation_set_is_rendered_once_and_refreshed_when_the_image_changes(
    synthetic_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = data.split_files(synthetic_dir, "val", synthetic_dir / "split.json")
    first = data.render_validation_set(paths, 4, crop=48, cache_dir=tmp_path / "cache")
    assert (tmp_path / "cache" / "val_x4" / "scene4.hdr.bt2446a.0.npz").is_file()
    assert first[0].lr.shape == (1, 3, 12, 12) and first[0].hr.shape == (1, 3, 48, 48)

    def no_reading(path: Path) -> data.Scene:
        raise AssertionError(f"{path} was read although it is cached")

    monkeypatch.setattr(data, "read_scene", no_reading)
    second = data.render_validation_set(paths, 4, crop=48, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first[0].lr, second[0].lr)
    np.testing.assert_array_equal(first[0].hr, second[0].hr)
    monkeypatch.undo()

    write_hdr(paths[0], textured_scene(96, 128, seed=99))
    os.utime(paths[0], ns=(1, 10**18))
    third = data.render_validation_set(paths, 4, crop=48, cache_dir=tmp_path / "cache")
    assert not np.array_equal(first[0].hr, third[0].hr)


# --------------------------------------------------------------------------
# the split


def test_shipped_split_is_disjoint_and_spans_content() -> None:
    split = data.load_split()
    assert not set(split["train"]) & set(split["val"])
    assert len(split["val"]) >= 6 and len(split["train"]) >= 50
    # The first validation scenes stay, so figures stay comparable across sessions (issue 12).
    first = {"blender_forest", "desk", "dikhololo_night", "flowers", "rooitou_park", "st_fagans_interior"}
    assert first <= set(split["val"])
    assert "rec709_chart" not in split["val"] and "carrots" not in split["val"]  # the colour-chart scenes


def test_shipped_split_covers_the_shared_scenes(hdr_scenes_dir: Path) -> None:
    split = data.load_split()
    stems = {p.stem for p in data.scene_files(hdr_scenes_dir)}
    assert set(split["train"]) | set(split["val"]) == stems
    train = {p.stem for p in data.split_files(hdr_scenes_dir, "train")}
    val = {p.stem for p in data.split_files(hdr_scenes_dir, "val")}
    assert train == set(split["train"]) and val == set(split["val"]) and not train & val


def test_validation_scenes_never_enter_training(synthetic_dir: Path, tmp_path: Path) -> None:
    batches = data.scene_training_batches(
        synthetic_dir, 2, batch_size=4, hr_patch=16, seed=0, variants=2,
        split_file=synthetic_dir / "split.json", cache_dir=tmp_path / "cache",
    )
    assert batches.names == ["scene0", "scene1", "scene2", "scene3"]
    assert all(len(v) == 2 for v in batches.inputs)
    assert sorted(p.name for p in (tmp_path / "cache" / "train_x2").iterdir()) == [
        f"scene{i}.hdr.bt2446a.{k}.npz" for i in range(4) for k in range(2)
    ]


def test_split_errors(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_split(tmp_path / "none.json")
    (tmp_path / "both.json").write_text(json.dumps({"train": ["a", "b"], "val": ["b"]}))
    with pytest.raises(data.DataError, match="b in both"):
        data.load_split(tmp_path / "both.json")
    write_hdr(tmp_path / "x.hdr", textured_scene(16, 16))
    (tmp_path / "other.json").write_text(json.dumps({"train": ["a"], "val": ["b"]}))
    with pytest.raises(data.DataError, match="none of the images"):
        data.split_files(tmp_path, "train", tmp_path / "other.json")


# --------------------------------------------------------------------------
# real scenes


@pytest.mark.parametrize("name", ["rooitou_park.hdr", "desk.exr"])
def test_real_scene_formation(hdr_scenes_dir: Path, name: str) -> None:
    read = data.read_scene(hdr_scenes_dir / name)
    if name.endswith(".hdr"):
        assert read.rgb.shape == (256, 1024, 3)  # central band of the 1024 x 512 panorama
    pair = data.form_pair(read, 4)
    y = data.luminance(np.maximum(read.rgb, 0.0)) * pair.gain
    log_average = float(np.exp(np.mean(np.log(np.maximum(y, 1e-4 * np.percentile(y, 99.5))))))
    p995 = float(np.percentile(y, 99.5))
    assert log_average == pytest.approx(26.0, rel=1e-6) or p995 == pytest.approx(4000.0, rel=1e-6)
    assert p995 <= 4000.0 * (1 + 1e-6)
    nits = colour.pq_eotf(np.clip(colour.codes_to_rgb(pair.hdr_codes.astype(np.float64), colour.BT2020, 10), 0, 1))
    assert 500.0 < nits.max() <= 1000.0 * 1.015  # both scenes have highlights that reach the peak
    assert pair.sdr_codes is not None
    assert pair.sdr_codes[..., 0].min() >= 16 and pair.sdr_codes[..., 0].max() <= 235
    assert pair.sdr_codes[..., 1:].min() >= 16 and pair.sdr_codes[..., 1:].max() <= 240
    assert 40 < pair.sdr_codes[..., 0].mean() < 160  # a plausible average picture level


# --------------------------------------------------------------------------
# Kim et al.'s .mat files


def write_mat(path: Path, key: str, matlab_array: np.ndarray) -> None:
    """Write a MATLAB v7.3-style file: HDF5 with a 512-byte userblock, column-major (axes reversed)."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset(key, data=np.ascontiguousarray(matlab_array.transpose()))


def kim_arrays(count: int, lr: int, scale: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB-order [H, W, 3, N] arrays; the Y plane of patch n is the constant n + 100 (flip-invariant)."""
    rng = np.random.default_rng(seed)
    sdr = rng.integers(16, 236, (lr, lr + 2, 3, count), dtype=np.uint8)
    hdr = rng.integers(64, 941, (lr * scale, (lr + 2) * scale, 3, count)).astype(np.uint16)
    sdr[:, :, 0, :] = np.arange(count, dtype=np.uint8) + 100
    return sdr, hdr


@pytest.mark.parametrize("scale", [2, 4])
def test_kim_training_files(tmp_path: Path, scale: int) -> None:
    sdr, hdr = kim_arrays(12, 8, scale)
    sdr_name, hdr_name = data.KIM_TRAIN_FILES[scale]
    write_mat(tmp_path / sdr_name, "SDR_data", sdr)
    write_mat(tmp_path / hdr_name, "HDR_data", hdr)
    import h5py  # type: ignore[import-untyped]

    with h5py.File(tmp_path / sdr_name, "r") as f:
        assert f["SDR_data"].shape == (12, 3, 10, 8)  # what h5py sees of a [H, W, 3, N] MATLAB array
    pairs = data.kim_training_pairs(tmp_path, scale)
    assert len(pairs) == 12 and pairs.sdr.size == (8, 10) and pairs.hdr.size == (8 * scale, 10 * scale)
    lr, hr = pairs.read([3, 5])
    np.testing.assert_allclose(lr[0], sdr[..., 3].transpose(2, 0, 1) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(hr[1], hdr[..., 5].transpose(2, 0, 1) / 1023.0, rtol=1e-6)
    assert lr.dtype == np.float32 and hr.dtype == np.float32

    batches = data.KimPatchBatches(pairs, batch_size=16, seed=0, validation=4)
    drawn: set[int] = set()
    for step in range(5):
        lr_batch, hr_batch, grading_batch = batches[step]
        assert torch.equal(grading_batch, torch.zeros(16, dtype=torch.int64))  # Kim et al.'s SDR: bt2446a
        assert lr_batch.shape == (16, 3, 8, 10) and hr_batch.shape == (16, 3, 8 * scale, 10 * scale)
        drawn.update(round(v) - 100 for v in (lr_batch[:, 0, 0, 0] * 255.0).tolist())
        # HR and LR of one batch item come from the same patch (and the same flips)
        lr_np, hr_np = lr_batch.numpy(), hr_batch.numpy()
        for b in range(16):
            n = round(float(lr_np[b, 0, 0, 0]) * 255.0) - 100
            candidates = [hdr[..., n].transpose(2, 0, 1) / 1023.0]
            candidates += [c[:, :, ::-1] for c in candidates]
            candidates += [c[:, ::-1] for c in candidates]
            assert any(np.allclose(hr_np[b], c, atol=1e-6) for c in candidates)
    assert drawn and max(drawn) < 8  # the last 4 (validation) patches are never drawn
    validation = list(data.kim_validation_batches(pairs, batch_size=3, validation=4))
    assert [v[0].shape[0] for v in validation] == [3, 1]
    np.testing.assert_allclose(validation[0][0][0], sdr[..., 8].transpose(2, 0, 1) / 255.0, rtol=1e-6)


def test_kim_test_files_and_errors(tmp_path: Path) -> None:
    sdr, hdr = kim_arrays(3, 6, 4, seed=1)
    write_mat(tmp_path / "testset_SDR_x4.mat", "SDR_YUV", sdr)
    write_mat(tmp_path / "testset_HDR.mat", "HDR_YUV", hdr)
    pairs = data.kim_test_pairs(tmp_path, 4)
    lr, hr = pairs.read(slice(2, 3))
    np.testing.assert_allclose(hr[0], hdr[..., 2].transpose(2, 0, 1) / 1023.0, rtol=1e-6)
    with pytest.raises(data.DataError, match="do not match"):
        data.KimPairs(tmp_path / "testset_SDR_x4.mat", tmp_path / "testset_HDR.mat", 2, data.KIM_TEST_KEYS)
    with pytest.raises(data.DataError, match="no variable 'SDR_data'"):
        data.KimPairs(tmp_path / "testset_SDR_x4.mat", tmp_path / "testset_HDR.mat", 4)
    (tmp_path / "old.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(data.DataError, match="not a MATLAB v7.3"):
        data.MatArray(tmp_path / "old.mat", "SDR_YUV")
    with pytest.raises(data.DataError, match="does not exist"):
        data.kim_test_pairs(tmp_path, 2)
    with pytest.raises(data.DataError, match="not more than the 500 validation"):
        data.KimPatchBatches(pairs, batch_size=2, seed=0)


# --------------------------------------------------------------------------
# graded, codec-degraded renditions

CONVENTION_NAMES = ("bt2446a", "bt2408", "bt2446c", "reinhard", "drago", "mantiuk", "hable")  # the served order
CODEC_PREFIXES = ("libx264 crf ", "libx265 crf ", "jpeg q")


def test_graded_renditions_cover_every_grading_and_degrade_half() -> None:
    master = data.form_pair(scene(textured_scene(64, 64, seed=3)), 4)
    renditions = data.graded_renditions(master, np.random.default_rng(0))
    assert [r.grading for r in renditions] == [name for name in CONVENTION_NAMES for _ in range(2)]
    for index, rendition in enumerate(renditions):
        assert rendition.hdr_codes is master.hdr_codes  # one ground truth, shared
        assert rendition.lr_i420.shape == master.lr_i420.shape and rendition.lr_i420.dtype == np.uint8
        assert (rendition.name, rendition.scale, rendition.gain) == (master.name, master.scale, master.gain)
        if index % 2:
            assert rendition.degradation.startswith(CODEC_PREFIXES), rendition.degradation
        else:
            assert rendition.degradation == ""
    assert sum(bool(r.degradation) for r in renditions) == len(renditions) // 2
    luma = {r.grading: colour.unpack_i420(r.lr_i420)[0].astype(int) for r in renditions[::2]}
    assert not np.array_equal(luma["bt2446a"], luma["hable"]) and not np.array_equal(luma["bt2408"], luma["mantiuk"])
    # The clean bt2446a rendition is the paper's formation, up to its grading variation where it has one.
    paper = colour.unpack_i420(master.lr_i420)[0].astype(int)
    assert np.abs(luma["bt2446a"] - paper).mean() < 20
    again = data.graded_renditions(master, np.random.default_rng(0))
    assert all(np.array_equal(a.lr_i420, b.lr_i420) and a.degradation == b.degradation
               for a, b in zip(renditions, again))
    only = data.graded_renditions(master, np.random.default_rng(1), names=("bt2408",))
    assert [r.grading for r in only] == ["bt2408", "bt2408"]


def test_about_half_of_the_renditions_are_graded_by_the_standard() -> None:
    master = data.form_pair(scene(textured_scene(64, 64, seed=9)), 4)
    paper = colour.unpack_i420(master.lr_i420)[0]
    clean = [data.graded_renditions(master, np.random.default_rng(seed), names=("bt2446a",))[0]
             for seed in range(40)]
    standard = sum(np.array_equal(colour.unpack_i420(r.lr_i420)[0], paper) for r in clean)
    assert data.STANDARD_FRACTION == 0.5 and 10 <= standard <= 30, standard  # binomial(40, 0.5): 10..30 is > 99.9 %
    assert standard < len(clean)  # and the others are varied


def test_graded_batches_carry_each_patchs_grading_index() -> None:
    masters = [data.form_pair(scene(textured_scene(64, 64, seed=s), f"s{s}"), 4) for s in (4, 5)]
    rng = np.random.default_rng(7)
    pairs = [data.graded_renditions(m, rng) for m in masters]
    batches = data.ScenePatchBatches(pairs, batch_size=48, hr_patch=32, seed=2)
    drawn = []
    for step in range(25):
        item = batches[step]
        assert len(item) == 3
        lr, hr, grading = item
        assert lr.shape == (48, 3, 8, 8) and hr.shape == (48, 3, 32, 32)
        assert grading.dtype == torch.int64 and grading.shape == (48,)
        assert 0 <= int(grading.min()) and int(grading.max()) < len(CONVENTION_NAMES)
        for b, ref in enumerate(batches.refs(step)):
            rendition = pairs[ref.scene][ref.variant]
            assert CONVENTION_NAMES[int(grading[b])] == rendition.grading
            expected = rendition.network_input()[:, ref.top : ref.top + 8, ref.left : ref.left + 8]
            if ref.flip_w:
                expected = expected[:, :, ::-1]
            if ref.flip_h:
                expected = expected[:, ::-1]
            np.testing.assert_array_equal(lr[b].numpy(), expected)  # the LR patch is that rendition's
        drawn += grading.tolist()
    counts = np.bincount(drawn, minlength=len(CONVENTION_NAMES)) / len(drawn)
    weights = np.array([data.GRADING_WEIGHTS[name] for name in CONVENTION_NAMES])
    np.testing.assert_allclose(counts, weights / weights.sum(), atol=0.04)


def test_graded_training_pairs_are_formed_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_hdr(tmp_path / "scene.hdr", textured_scene(64, 96, seed=8))
    cache = tmp_path / "cache"
    (first,) = data.graded_training_pairs([path], 4, variants=1, cache_dir=cache, seed=0)
    assert len(first) == 2 * len(CONVENTION_NAMES)
    assert (cache / "scene.hdr.graded.npz").is_file()
    assert first[0].lr_i420.shape == (16 * 3 // 2, 24) and first[0].hdr_codes.shape == (64, 96, 3)

    def no_reading(path: Path) -> data.Scene:
        raise AssertionError(f"{path} was read although it is cached")

    monkeypatch.setattr(data, "read_scene", no_reading)
    (second,) = data.graded_training_pairs([path], 4, variants=1, cache_dir=cache, seed=0)
    for a, b in zip(first, second, strict=True):
        assert (a.grading, a.degradation, a.gain) == (b.grading, b.degradation, b.gain)
        np.testing.assert_array_equal(a.lr_i420, b.lr_i420)
        np.testing.assert_array_equal(a.hdr_codes, b.hdr_codes)


def test_validation_set_per_grading_and_its_h264_twin(synthetic_dir: Path, tmp_path: Path) -> None:
    paths = data.split_files(synthetic_dir, "val", synthetic_dir / "split.json")
    cache = tmp_path / "cache"
    clean = data.render_validation_set(paths, 4, crop=48, cache_dir=cache)
    twin = data.render_validation_set(paths, 4, crop=48, cache_dir=cache, compressed=True)
    other = data.render_validation_set(paths, 4, crop=48, cache_dir=cache, grading="bt2408")
    assert (clean[0].grading, clean[0].compressed) == ("bt2446a", False)
    assert (twin[0].grading, twin[0].compressed) == ("bt2446a", True)
    assert other[0].grading == "bt2408"
    for samples in (twin, other):
        np.testing.assert_array_equal(samples[0].hr, clean[0].hr)  # one ground truth
        assert samples[0].lr.shape == clean[0].lr.shape and not np.array_equal(samples[0].lr, clean[0].lr)
    mse = float(np.mean((twin[0].lr[0, 0] * 255.0 - clean[0].lr[0, 0] * 255.0) ** 2))
    assert 0 < mse and 10 * np.log10(255.0**2 / mse) > 25.0  # CRF 28: visibly coded, the same picture
    names = sorted(p.name for p in (cache / "val_x4").iterdir())
    assert names == ["scene4.hdr.bt2408.0.npz", "scene4.hdr.bt2446a.0.npz", "scene4.hdr.bt2446a.h264.0.npz"]

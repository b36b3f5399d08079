"""What phones and web tools write: HEIC (iPhone), AVIF, WebP, CMYK JPEG, 16-bit PNG, grayscale, each with the EXIF
orientation a phone sets, read to the image a viewer displays: in training folders, in ``predict`` and in the
header checks run at setup. References: the original array turned with numpy (EXIF orientation 6 is a quarter
turn clockwise), never the decoder under test."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mobilevision.cli import main as mobilevision
from mobilevision.data import ClassificationDataset
from mobilevision.data.image_io import ImageDecodeError, check_image_headers, load_rgb_image, read_image_size
from mobilevision.tasks import ClassificationTask

H, W = 48, 64


def scene() -> np.ndarray:
    """Smooth colours with a distinct corner (lossy codecs keep them), HxWx3 uint8, H != W."""
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x * 255 // W, y * 255 // H, np.full_like(x, 90)], -1).astype(np.uint8)
    rgb[:12, :12] = (250, 20, 20)
    return rgb


def exif(orientation: int) -> bytes:
    e = Image.Exif()
    e[0x0112] = orientation
    return e.tobytes()


def png_with_late_exif(rgb: np.ndarray, orientation: int) -> bytes:
    """A PNG whose eXIf chunk comes after the image data (before IEND), as some tools write it."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    data = buf.getvalue()
    payload = exif(orientation)[6:] if exif(orientation).startswith(b"Exif\0\0") else exif(orientation)
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + chunk + data[iend:]


def write_photos(folder: Path) -> dict[str, tuple[np.ndarray, float]]:
    """name -> (displayed image expected, mean absolute tolerance) for one photo of each kind."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = scene()
    turned = np.rot90(rgb, k=-1)  # orientation 6: displayed turned a quarter clockwise
    Image.fromarray(rgb).save(folder / "iphone.heic", exif=exif(6), quality=95)
    Image.fromarray(rgb).save(folder / "pixel.avif", exif=exif(6), quality=95)
    Image.fromarray(rgb).save(folder / "web.webp", exif=exif(6), lossless=True)
    Image.fromarray(rgb).convert("CMYK").save(folder / "print.jpg", exif=exif(6), quality=95)
    Image.fromarray(rgb).convert("L").save(folder / "gray.jpg", exif=exif(6), quality=95)
    cv2.imwrite(str(folder / "deep16.png"), rgb[:, :, ::-1].astype(np.uint16) * 257)  # 16-bit RGB
    (folder / "late_exif.png").write_bytes(png_with_late_exif(rgb, 6))
    gray = np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None], 3, 2)
    cmyk = np.asarray(Image.fromarray(rgb).convert("CMYK").convert("RGB"))
    return {"iphone.heic": (turned, 6.0), "pixel.avif": (turned, 6.0), "web.webp": (turned, 0.0),
            "print.jpg": (np.rot90(cmyk, k=-1), 4.0), "gray.jpg": (np.rot90(gray, k=-1), 3.0),
            "deep16.png": (rgb, 0.0), "late_exif.png": (turned, 0.0)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("phone")
    return folder, write_photos(folder)


def test_each_format_decodes_to_the_displayed_image(photos):
    folder, expected = photos
    for name, (want, tol) in expected.items():
        got = load_rgb_image(folder / name)
        assert got.shape == want.shape, name
        assert np.abs(got.astype(float) - want).mean() <= tol + 0.5, name
        # the header check at setup says the same size as the decoder (w, h)
        assert read_image_size(folder / name) == (want.shape[1], want.shape[0]), name
    assert check_image_headers([str(folder / n) for n in sorted(expected)], "phone") == [
        (expected[n][0].shape[1], expected[n][0].shape[0]) for n in sorted(expected)]


def test_training_folders_take_every_phone_format_and_name_a_bad_one(photos, tmp_path):
    folder, expected = photos
    for cls in ("a", "b"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for name in expected:
            (tmp_path / "train" / cls / name).write_bytes((folder / name).read_bytes())
    ds = ClassificationDataset.from_folder(tmp_path / "train")
    assert len(ds) == 2 * len(expected) and ds.stats["skipped_non_image"] == 0
    for i, path in enumerate(ds.files):
        assert ds.load_image(i).shape == expected[Path(path).name][0].shape
    (tmp_path / "train" / "b" / "broken.heic").write_bytes(b"\0\0\0\x18ftypheic not really")
    with pytest.raises(ImageDecodeError, match=r"1 of 15 images cannot be read:\n.*broken.heic"):
        ClassificationDataset.from_folder(tmp_path / "train")


def test_predict_on_a_folder_of_phone_photos(photos, tmp_path):
    """Every format predicted (none silently left out); an undecodable .heic / .avif listed in skipped.txt."""
    folder, expected = photos
    src = tmp_path / "camera"
    src.mkdir()
    for name in expected:
        (src / name).write_bytes((folder / name).read_bytes())
    (src / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic cut short")
    (src / "cut.avif").write_bytes(b"\0\0\0\x1cftypavif")
    task = ClassificationTask(backbone="mobilenet_v1", width=0.25, num_classes=3, image_size=32,
                              class_names=["x", "y", "z"])
    ckpt = tmp_path / "cls.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, ckpt)
    out = tmp_path / "out"
    assert mobilevision(["predict", "--model", str(ckpt), "--source", str(src), "--output", str(out), "--quiet"]) == 0
    rows = (out / "predictions.csv").read_text().splitlines()
    predicted = {r.split(",")[0] for r in rows[1:]}
    assert predicted == set(expected)
    skipped = (out / "skipped.txt").read_text()
    assert "IMG_0001.HEIC" in skipped and "cut.avif" in skipped


def test_decompression_bomb_limit_and_the_option_that_lifts_it(tmp_path):
    """Pillow's limit stays (an ImageDecodeError naming the file); MOBILEVISION_MAX_IMAGE_PIXELS moves it."""
    import os
    import subprocess
    import sys

    Image.fromarray(scene()).save(tmp_path / "big.png")  # 3,072 pixels: a "bomb" under a limit of 1,000
    code = ("import sys; from mobilevision.data.image_io import load_rgb_image, ImageDecodeError\n"
            "try:\n    print(load_rgb_image(sys.argv[1]).shape)\n"
            "except ImageDecodeError as e:\n    print('refused:', e)\n")
    for value, expect in (("1000", "refused: cannot decode image "), ("none", "(48, 64, 3)")):
        env = {**os.environ, "MOBILEVISION_MAX_IMAGE_PIXELS": value}
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big.png")], capture_output=True, text=True,
                             env=env, timeout=120)
        assert out.stdout.startswith(expect), out.stdout + out.stderr
        if value == "1000":
            assert "big.png" in out.stdout and "DecompressionBomb" in out.stdout

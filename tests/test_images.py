"""Image values of add_record: PNG by digest in the run dir, at the record's step, checked."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from markov_otel import ConfigError, ExperimentRecorder, Image, RecordingMode
from markov_otel.shipping import blobs


def offline() -> ExperimentRecorder:
    return ExperimentRecorder("images", recording_mode=RecordingMode.OFFLINE)


def decode_png(data: bytes) -> Any:
    """Pixels of a PNG of 8-bit channels, filter 0 (what our encoder writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc
        chunks[kind] = body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[colour]
    raw = zlib.decompress(chunks[b"IDAT"])
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * channels)
    assert depth == 8 and (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, channels)


def stored_images(run_dir: Path) -> list[dict[str, Any]]:
    return [a for a in blobs.artifacts(run_dir) if a["kind"] == "image"]


def test_image_value_is_a_png_at_the_records_step_beside_its_numbers() -> None:
    """An RGB uint8 image with a number: the PNG decodes to the same pixels, named
    <key>/<step>.png with its caption, and a log record names key and step."""
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    expected = rgb.copy()
    with offline() as recorder:
        recorder.add_record({"loss": 1.0})
        recorder.add_record({"samples": Image(rgb, caption="epoch 1"), "loss": 0.5}, step=10)
        rgb[:] = 0  # the caller's later change does not reach the recorded picture
    [image] = stored_images(recorder.run_dir)
    assert (image["name"], image["step"], image["metadata"]) == (
        "samples/10.png", 10, {"caption": "epoch 1"},
    )  # fmt: skip
    png = blobs.blob_path(recorder.run_dir, image["digest"][7:]).read_bytes()
    assert (decode_png(png) == expected).all()
    metrics = (recorder.run_dir / "metrics.jsonl").read_text()
    assert metrics.count('"timeUnixNano"') == 2
    logs = (recorder.run_dir / "logs.jsonl").read_text()
    assert '{"key":"markov.key","value":{"stringValue":"samples"}}' in logs
    assert '{"key":"markov.step","value":{"intValue":"10"}}' in logs


def test_image_only_record_takes_one_step() -> None:
    """add_record of images alone takes a step: the next record is one step later."""
    with offline() as recorder:
        recorder.add_record({"loss": 1.0})  # step 0
        recorder.add_record({"grey": Image(np.zeros((4, 4)))})  # step 1
        recorder.add_record({"loss": 0.5})  # step 2
    [image] = stored_images(recorder.run_dir)
    assert image["step"] == 1
    assert '"intValue":"2"' in (recorder.run_dir / "metrics.jsonl").read_text()


def test_float_and_channels_first_images_are_converted() -> None:
    """Floats in [0, 1] become 0..255 and a CxHxW (torch) array becomes HxWxC."""
    chw = np.ones((3, 2, 6)) * np.array([0.0, 0.5, 1.0])[:, None, None]
    with offline() as recorder:
        recorder.add_record({"x": Image(chw)})
    [image] = stored_images(recorder.run_dir)
    pixels = decode_png(blobs.blob_path(recorder.run_dir, image["digest"][7:]).read_bytes())
    assert pixels.shape == (2, 6, 3) and pixels[0, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("shape", [(5,), (5, 3, 7), (2, 2, 2, 2), (0, 4)])
def test_an_image_of_no_image_shape_is_a_config_error_naming_the_key(shape: tuple[int]) -> None:
    """A shape that is not an image: ConfigError naming the key; nothing of the record kept."""
    with offline() as recorder, pytest.raises(ConfigError, match=r"'samples'.*is not an image"):
        recorder.add_record({"samples": Image(np.zeros(shape)), "loss": 1.0})
    assert stored_images(recorder.run_dir) == []
    assert '"timeUnixNano"' not in (recorder.run_dir / "metrics.jsonl").read_text()

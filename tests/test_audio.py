"""keyscribe.audio on real files that the tests encode with PyAV into a temporary folder."""
from __future__ import annotations

import dataclasses
import math
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from keyscribe.audio import (MAX_DURATION_S, AudioConfig, audio_duration_s, iter_audio_chunks,
                             load_audio)
from keyscribe.errors import AudioError

SR = 16000
ONSET_S = 0.25  # the test tone starts after this much silence, to check timing survives decoding
AAC_PADDING_S = 1024 / 44100  # FFmpeg does not trim the AAC encoder's padding after the last frame

# name -> (codec, container format or None for the extension's, input rate Hz, with a video stream)
FORMATS = {
    "tone.wav": ("pcm_s16le", None, 44100, False),
    "tone.flac": ("flac", None, 44100, False),
    "tone.ogg": ("vorbis", None, 44100, False),
    "tone.opus": ("libopus", "ogg", 48000, False),
    "tone.mp3": ("libmp3lame", None, 44100, False),
    "tone.m4a": ("aac", None, 44100, False),
    "tone.mp4": ("aac", None, 44100, True),
    "tone.mov": ("aac", "mov", 44100, True),
}


def tone(rate: int, seconds: float = 1.0, freq: float = 440.0, channels: int = 2) -> np.ndarray:
    """(channels, samples) float32: silence until ONSET_S, then a sine of `freq` Hz at 0.5."""
    t = np.arange(round(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * (t - ONSET_S)) * (t >= ONSET_S)
    return np.tile(x, (channels, 1)).astype(np.float32)


def encode(path: Path, signal: np.ndarray | None, rate: int, codec: str = "pcm_s16le",
           fmt: str | None = None, video: bool = False) -> Path:
    """Write `signal` ((channels, samples) in [-1, 1]) with PyAV, optionally beside a tiny video."""
    with av.open(str(path), "w", format=fmt) as out:
        # Every stream must exist before the first packet is written.
        picture = _video_stream(out) if video else None
        sound = _audio_stream(out, codec, rate, len(signal)) if signal is not None else None
        if picture is not None:
            _write_video(out, picture, 1.0 if signal is None else signal.shape[1] / rate)
        if sound is not None:
            _write_audio(out, sound, signal)
    return path


def _video_stream(out: av.container.OutputContainer) -> av.video.stream.VideoStream:
    stream = out.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    return stream


def _write_video(out: av.container.OutputContainer, stream, seconds: float) -> None:
    for i in range(max(1, round(seconds * 10))):
        frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i % 256, np.uint8), format="rgb24")
        frame.pts = i
        out.mux(stream.encode(frame))
    out.mux(stream.encode())


def _audio_stream(out: av.container.OutputContainer, codec: str, rate: int, channels: int):
    # FFmpeg's own vorbis encoder is marked experimental, so it must be allowed explicitly.
    options = {"strict": "experimental"} if codec == "vorbis" else {}
    stream = out.add_stream(codec, rate=rate, options=options)
    stream.layout = {1: "mono", 2: "stereo"}[channels]
    supported = [f.name for f in stream.codec_context.codec.audio_formats]
    stream.format = next(f for f in ("fltp", "flt", "s16p", "s16") if f in supported)
    return stream


def _write_audio(out: av.container.OutputContainer, stream, signal: np.ndarray) -> None:
    for start in range(0, signal.shape[1], 1024):
        frame = _audio_frame(signal[:, start:start + 1024], stream.format, stream.rate, start)
        out.mux(stream.encode(frame))
    out.mux(stream.encode())


def _audio_frame(block: np.ndarray, sample_format: av.AudioFormat, rate: int, pts: int) -> av.AudioFrame:
    layout = {1: "mono", 2: "stereo"}[len(block)]
    if sample_format.name.startswith("s16"):
        block = np.round(block * 32767).astype(np.int16)
    if sample_format.is_packed:
        block = block.T.reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format=sample_format.name,
                                       layout=layout)
    frame.sample_rate, frame.pts = rate, pts
    return frame


def peak_hz(x: np.ndarray, rate: int = SR) -> float:
    """Frequency (Hz) of the strongest FFT bin of the tone part, zero-padded to 1/16 Hz bins."""
    part = x[round(ONSET_S * rate) + 100:]
    spectrum = np.abs(np.fft.rfft(part * np.hanning(len(part)), 16 * rate))
    return float(np.argmax(spectrum)) / 16


def onset_s(x: np.ndarray, rate: int = SR) -> float:
    return float(np.argmax(np.abs(x) > 0.25)) / rate


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    return {name: encode(folder / name, tone(rate), rate, codec, fmt, video)
            for name, (codec, fmt, rate, video) in FORMATS.items()}


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_decodes_to_mono_float32_at_16k_with_timing_and_pitch(files, name):
    x = load_audio(files[name])
    assert x.dtype == np.float32 and x.ndim == 1 and x.flags.owndata
    slack = AAC_PADDING_S if FORMATS[name][0] == "aac" else 0.0
    assert 1.0 - 0.005 <= len(x) / SR <= 1.0 + 0.005 + slack
    assert onset_s(x) == pytest.approx(ONSET_S, abs=0.002)
    assert peak_hz(x) == pytest.approx(440.0, abs=0.5)
    assert np.abs(x).max() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100])
def test_any_output_rate_keeps_length_and_pitch(files, rate):
    x = load_audio(files["tone.wav"], sample_rate=rate)
    assert abs(len(x) - rate) <= 1
    assert peak_hz(x, rate) == pytest.approx(440.0, abs=0.5)
    assert onset_s(x, rate) == pytest.approx(ONSET_S, abs=0.001)


def test_stereo_is_the_average_of_its_channels(tmp_path):
    left, right = tone(44100, freq=440.0, channels=1), tone(44100, freq=660.0, channels=1) * 0.6
    stereo = encode(tmp_path / "stereo.wav", np.concatenate([left, right]), 44100, "pcm_f32le")
    left_only = encode(tmp_path / "left.wav", left, 44100, "pcm_f32le")
    right_only = encode(tmp_path / "right.wav", right, 44100, "pcm_f32le")
    # Resampling is linear, so the downmix of the resampled channels is the resampled downmix.
    expected = (load_audio(left_only) + load_audio(right_only)) / 2
    np.testing.assert_allclose(load_audio(stereo), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["tone.mp3", "tone.flac"])
def test_chunks_join_to_the_whole_and_have_the_asked_length(files, name):
    chunks = list(iter_audio_chunks(files[name], SR, chunk_s=0.3))
    assert [len(c) for c in chunks[:-1]] == [4800] * (len(chunks) - 1)
    assert 0 < len(chunks[-1]) <= 4800
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), load_audio(files[name]))


def test_duration_comes_from_the_header_or_is_none(files, tmp_path):
    assert audio_duration_s(files["tone.wav"]) == pytest.approx(1.0, abs=1e-3)
    assert audio_duration_s(files["tone.mp4"]) == pytest.approx(1.0, abs=0.03)
    assert audio_duration_s(_flac_without_length(tmp_path, 1.0)) is None


def test_config_defaults_and_is_frozen():
    config = AudioConfig()
    assert (config.sample_rate, config.max_duration_s) == (16000, MAX_DURATION_S) == (16000, 4 * 3600)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.sample_rate = 8000  # type: ignore[misc]


def test_a_name_ffmpeg_could_take_for_a_protocol_still_loads(files, tmp_path):
    odd = tmp_path / "concat:take 1 é.wav"
    odd.write_bytes(files["tone.wav"].read_bytes())
    assert len(load_audio(odd)) == SR


@pytest.mark.parametrize("name", ["tone.wav", "tone.mp3"])
def test_a_file_cut_mid_stream_returns_the_part_that_decodes(files, tmp_path, caplog, name):
    data = files[name].read_bytes()
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(data[:len(data) // 2])
    x = load_audio(cut)
    assert 0.4 < len(x) / SR < 0.6 and x.dtype == np.float32
    if name == "tone.mp3":  # FFmpeg measures a wav from its size; the mp3's Xing header still says 1 s
        assert f"cut-{name}" in caplog.text and "truncated" in caplog.text


def test_damage_mid_file_is_skipped_and_reported(files, tmp_path, caplog):
    data = bytearray(files["tone.mp3"].read_bytes())
    middle = len(data) // 2
    data[middle:middle + 500] = np.random.default_rng(0).integers(0, 256, 500, np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(bytes(data))
    x = load_audio(damaged)
    assert 0.8 < len(x) / SR <= 1.0
    assert "damaged.mp3" in caplog.text


def _flac_without_length(folder: Path, seconds: float) -> Path:
    """A flac whose STREAMINFO leaves the sample count 0 ('unknown'), as streaming encoders do."""
    path = folder / "streamed.flac"
    sf.write(path, tone(44100, seconds, channels=1)[0], 44100)
    data = bytearray(path.read_bytes())
    # STREAMINFO: 'fLaC', 4-byte block header, 10 bytes of sizes, then 64 bits ending in the
    # 36-bit total sample count.
    packed = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = packed.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def _missing(folder: Path, files) -> Path:
    return folder / "missing.wav"


def _directory(folder: Path, files) -> Path:
    (folder / "folder.wav").mkdir()
    return folder / "folder.wav"


def _empty(folder: Path, files) -> Path:
    (folder / "empty.mp3").touch()
    return folder / "empty.mp3"


def _text_named_mp3(folder: Path, files) -> Path:
    path = folder / "notes.mp3"
    path.write_text("these are not the sounds you are looking for\n" * 50)
    return path


def _random_bytes_named_wav(folder: Path, files) -> Path:
    path = folder / "noise.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    return path


def _wav_with_broken_header(folder: Path, files) -> Path:
    path = folder / "broken-header.wav"
    path.write_bytes(b"\0" * 44 + files["tone.wav"].read_bytes()[44:])
    return path


def _m4a_cut_before_its_index(folder: Path, files) -> Path:
    # PyAV writes the mp4 index (moov) at the end, so the first half cannot even be opened.
    path = folder / "cut.m4a"
    data = files["tone.m4a"].read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def _wav_without_samples(folder: Path, files) -> Path:
    path = folder / "silent-nothing.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(44100)
    return path


def _video_without_audio(folder: Path, files) -> Path:
    return encode(folder / "silent-film.mp4", None, 44100, video=True)


BAD_INPUTS = [_missing, _directory, _empty, _text_named_mp3, _random_bytes_named_wav,
              _wav_with_broken_header, _m4a_cut_before_its_index, _wav_without_samples,
              _video_without_audio]


def assert_one_line_naming(error: pytest.ExceptionInfo, path: Path) -> None:
    assert error.type is AudioError
    message = str(error.value)
    assert path.name in message and "\n" not in message and len(message) < 300


@pytest.mark.parametrize("make", BAD_INPUTS, ids=lambda make: make.__name__.strip("_"))
def test_bad_input_raises_one_line_audio_error_naming_the_file(files, tmp_path, make):
    path = make(tmp_path, files)
    with pytest.raises(AudioError) as error:
        load_audio(path)
    assert_one_line_naming(error, path)
    with pytest.raises(AudioError) as error:
        list(iter_audio_chunks(path, SR, 1.0))
    assert_one_line_naming(error, path)


def test_too_long_is_refused_from_the_header_before_decoding(files):
    with pytest.raises(AudioError, match="limit") as error:
        load_audio(files["tone.mp3"], max_duration_s=0.5)
    assert_one_line_naming(error, files["tone.mp3"])
    with pytest.raises(AudioError, match="limit"):
        iter_audio_chunks(files["tone.mp3"], SR, 1.0, max_duration_s=0.5)  # raised on the call


def test_too_long_is_refused_while_decoding_when_the_header_has_no_length(tmp_path):
    path = _flac_without_length(tmp_path, 2.0)
    assert len(load_audio(path)) == 2 * SR
    with pytest.raises(AudioError, match="limit") as error:
        load_audio(path, max_duration_s=1.0)
    assert_one_line_naming(error, path)
    with pytest.raises(AudioError, match="limit"):
        list(iter_audio_chunks(path, SR, 0.25, max_duration_s=1.0))


@pytest.mark.parametrize("kwargs", [{"sample_rate": 0}, {"sample_rate": 16000.5},
                                    {"max_duration_s": 0}, {"max_duration_s": math.nan}])
def test_bad_arguments_raise_audio_error(files, kwargs):
    with pytest.raises(AudioError):
        load_audio(files["tone.wav"], **kwargs)


def test_bad_chunk_length_raises_audio_error(files):
    with pytest.raises(AudioError):
        iter_audio_chunks(files["tone.wav"], SR, chunk_s=0)


def test_active_power_ignores_silence_and_is_the_same_chunk_by_chunk():
    from keyscribe.audio import active_power, active_power_of_chunks, gain_to, loudness_gain
    from keyscribe.data.augment import AugmentConfig
    from keyscribe.inference import INPUT_LOUDNESS_DBFS

    t = np.arange(4 * SR) / SR
    tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # power 0.005: -23 dBFS
    with_silence = np.concatenate([tone, np.zeros(6 * SR, np.float32)])
    assert 10 * np.log10(active_power(with_silence, SR)) == pytest.approx(-23.0, abs=0.05)
    chunks = [with_silence[i:i + SR] for i in range(0, len(with_silence), SR)]
    assert active_power_of_chunks(iter(chunks), SR) == pytest.approx(active_power(with_silence, SR), rel=1e-9)
    louder = with_silence * np.float32(loudness_gain(with_silence, SR, -12.0))
    assert 10 * np.log10(active_power(louder, SR)) == pytest.approx(-12.0, abs=0.01)
    assert gain_to(0.0, -24.0) == 1.0  # silence stays silence
    # the engine's level is the centre of the range the training renders were brought to
    assert INPUT_LOUDNESS_DBFS == pytest.approx(np.mean(AugmentConfig().loudness_dbfs))

"""Recordings in, mono float32 samples out, at the sample rate the models expect.

Units: sample rates in Hz, durations and times in seconds, samples as float32 in [-1, 1].

PyAV (FFmpeg) decodes every container and codec we accept (wav, flac, ogg/vorbis, ogg/opus, mp3,
m4a/aac, the audio track of mp4/mov video, and whatever else FFmpeg reads); soxr resamples. Both
work frame by frame, so a long recording is decoded once and never held at its original rate:
memory is the output array (`load_audio`) or one chunk (`iter_audio_chunks`).

Every problem with the input file becomes an `AudioError` whose message is one line naming the
file; no PyAV/FFmpeg exception escapes.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import soxr

from keyscribe.errors import AudioError

log = logging.getLogger(__name__)

MAX_DURATION_S = 4 * 3600  # longer inputs are almost surely mistakes (a looped stream, a whole album)


@dataclass(frozen=True)
class AudioConfig:
    """How recordings are decoded: output `sample_rate` (Hz) and the longest accepted input (s)."""

    sample_rate: int = 16000
    max_duration_s: float = MAX_DURATION_S


DEFAULT_CONFIG = AudioConfig()
RESAMPLE_QUALITY = "VHQ"  # measured no slower than "HQ": decoding, not resampling, dominates
_INT_SCALE = {"u8": 2.0 ** -7, "s16": 2.0 ** -15, "s32": 2.0 ** -31, "s64": 2.0 ** -63}
_AVError = (av.FFmpegError, OSError, UnicodeDecodeError)  # UnicodeDecodeError: odd tag bytes


def load_audio(path: str | os.PathLike, sample_rate: int = DEFAULT_CONFIG.sample_rate,
               max_duration_s: float | None = None) -> np.ndarray:
    """Decode a recording to a 1-D float32 array at `sample_rate` Hz, channels averaged to mono.

    `max_duration_s` (seconds, default `AudioConfig.max_duration_s`; `math.inf` for no limit) is
    checked against the container's duration before decoding and against the decoded audio while
    decoding. A file cut short mid-stream returns what decodes (logging a warning when its header
    promised more); damaged packets are skipped and logged.
    Raises `AudioError` for anything wrong with the file.
    """
    limit = _limit(max_duration_s)
    with _Source(path, sample_rate, limit) as source:
        out = _Output(source.expected_samples())
        for block in source.blocks():
            out.append(block)
        return source.finish(out.result())


def iter_audio_chunks(path: str | os.PathLike, sample_rate: int = DEFAULT_CONFIG.sample_rate,
                      chunk_s: float = 30.0, max_duration_s: float | None = None
                      ) -> Iterator[np.ndarray]:
    """Yield a recording as consecutive float32 mono chunks of `chunk_s` seconds at `sample_rate` Hz.

    Every chunk but the last has exactly round(chunk_s * sample_rate) samples; joined they equal
    `load_audio(path, sample_rate)`. Memory stays at about one chunk whatever the file's length.
    The file is opened and checked on the call (so a bad path fails at once) and decoded while
    iterating, so `AudioError` can also come mid-way (the length limit passed, nothing decodable).
    """
    if not (chunk_s > 0 and math.isfinite(chunk_s)):
        raise AudioError(f"chunk length must be a positive number of seconds, got {chunk_s}")
    source = _Source(path, sample_rate, _limit(max_duration_s))
    return _rechunk(source, max(1, round(chunk_s * sample_rate)))


def audio_duration_s(path: str | os.PathLike) -> float | None:
    """The recording's duration in seconds from its container header, or None if it has none.

    Cheap: reads the header only, so it can be wrong for damaged or concatenated files.
    Raises `AudioError` if the file cannot be opened or has no audio stream.
    """
    with _Source(path, DEFAULT_CONFIG.sample_rate, math.inf) as source:
        return source.header_duration_s


# ------------------------------------------------------------------------------------------- level
# One loudness measure for the whole package: the training renders are brought to a random active
# loudness with it, and the transcription engine brings each recording to the centre of that range.

LEVEL_FRAME_S = 0.05
ACTIVE_RANGE_DB = 50.0  # frames this far below the loudest are silence and do not count


def frame_power(x: np.ndarray, hop: int) -> np.ndarray:
    """Mean power of consecutive `hop`-sample frames of `x` (a shorter tail is dropped; one frame if
    `x` is shorter than `hop`)."""
    m = len(x) // hop
    if m == 0:
        return np.array([float(np.mean(np.square(x, dtype=np.float64)))]) if len(x) else np.zeros(1)
    fr = x[: m * hop].reshape(m, hop).astype(np.float64)
    return np.einsum("ij,ij->i", fr, fr) / hop


def _active_mean(powers: np.ndarray) -> float:
    top = float(powers.max()) if powers.size else 0.0
    if top <= 0:
        return 0.0
    return float(powers[powers >= top * 10 ** (-ACTIVE_RANGE_DB / 10)].mean())


def active_power(x: np.ndarray, sample_rate: int) -> float:
    """Mean power of the 50 ms frames within 50 dB of the loudest (silence does not count); 0 for silence."""
    return _active_mean(frame_power(x, max(1, round(LEVEL_FRAME_S * sample_rate))))


def active_power_of_chunks(chunks: Iterator[np.ndarray], sample_rate: int) -> float:
    """`active_power` of consecutive chunks of one recording (each chunk's frames counted on their own:
    equal to the whole recording's when every chunk but the last is a whole number of 50 ms frames)."""
    hop = max(1, round(LEVEL_FRAME_S * sample_rate))
    powers = [frame_power(c, hop) for c in chunks if len(c)]
    return _active_mean(np.concatenate(powers)) if powers else 0.0


def loudness_gain(x: np.ndarray, sample_rate: int, target_dbfs: float) -> float:
    """The linear gain that brings `x`'s active loudness (`active_power`) to `target_dbfs`; 1 for silence."""
    return gain_to(active_power(x, sample_rate), target_dbfs)


def gain_to(power: float, target_dbfs: float) -> float:
    """The linear gain that brings an active power (as `active_power` gives) to `target_dbfs`; 1 for 0."""
    return 10 ** (target_dbfs / 20) / math.sqrt(power) if power > 0 else 1.0


def _limit(max_duration_s: float | None) -> float:
    limit = DEFAULT_CONFIG.max_duration_s if max_duration_s is None else max_duration_s
    if not limit > 0:  # also rejects NaN
        raise AudioError(f"max_duration_s must be positive, got {max_duration_s}")
    return limit


def _rechunk(source: _Source, chunk_len: int) -> Iterator[np.ndarray]:
    with source:
        pending: list[np.ndarray] = []
        n_pending = n_yielded = 0
        for block in source.blocks():
            pending.append(block)
            n_pending += len(block)
            if n_pending >= chunk_len:
                joined = np.concatenate(pending)
                n_full = len(joined) // chunk_len * chunk_len
                for start in range(0, n_full, chunk_len):
                    yield joined[start:start + chunk_len]
                n_yielded += n_full
                pending, n_pending = [joined[n_full:]], len(joined) - n_full
        tail = np.concatenate(pending) if pending else np.zeros(0, np.float32)
        if n_yielded == 0:
            source.finish(tail)
        if tail.size:
            yield tail


class _Source:
    """One opened recording: validates the file, picks the audio stream, streams resampled blocks."""

    def __init__(self, path: str | os.PathLike, sample_rate: int, max_duration_s: float) -> None:
        if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
            raise AudioError(f"sample rate must be a positive whole number of Hz, got {sample_rate!r}")
        self.path = Path(path)
        self.name = _printable(os.fspath(path))
        self.sample_rate = int(sample_rate)
        self.max_duration_s = max_duration_s
        self.decoded_s = 0.0  # input seconds decoded so far
        self.container = self._open()
        try:
            self.stream = self._audio_stream()
            self.header_duration_s = self._header_duration_s()
            self._check_length(self.header_duration_s or 0.0)
        except BaseException:
            self.container.close()
            raise

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.container.close()

    def expected_samples(self) -> int | None:
        """Output samples the header promises, for preallocation; None when it does not say.

        One second of slack covers codec padding (AAC decodes up to a frame past the header's end).
        """
        if self.header_duration_s is None:
            return None
        return math.ceil((self.header_duration_s + 1.0) * self.sample_rate)

    def blocks(self) -> Iterator[np.ndarray]:
        """Mono float32 blocks at `sample_rate`, in order, from decoding the whole stream once."""
        resampler = None
        for frame in self._frames():
            if resampler is None or resampler.in_rate != frame.sample_rate:
                if resampler is not None:  # the rate changed mid-stream: drain, then start afresh
                    yield resampler.flush()
                resampler = _Resampler(frame.sample_rate, self.sample_rate)
            yield resampler.push(_mono(frame))
        if resampler is not None:
            yield resampler.flush()

    def finish(self, samples: np.ndarray) -> np.ndarray:
        """Reject a result with no audio in it; pass anything else through."""
        if samples.size == 0:
            raise AudioError(f"{self.name}: the audio stream holds no samples (zero duration)")
        return samples

    def _open(self) -> av.container.InputContainer:
        if not self.path.exists():
            raise AudioError(f"{self.name}: no such file")
        if self.path.is_dir():
            raise AudioError(f"{self.name}: is a directory, not an audio file")
        try:
            if self.path.stat().st_size == 0:
                raise AudioError(f"{self.name}: the file is empty (0 bytes)")
            # The 'file:' prefix stops FFmpeg from reading a name such as 'a:b.mp3' as a protocol.
            return av.open("file:" + str(self.path.resolve()), metadata_errors="replace")
        except _AVError as exc:
            reason = _reason(exc)
            raise AudioError(f"{self.name}: not a readable audio or video file ({reason})") from exc

    def _audio_stream(self) -> av.audio.stream.AudioStream:
        streams = self.container.streams.audio
        if not streams:
            what = "a video with no audio track" if self.container.streams.video else "not an audio file"
            raise AudioError(f"{self.name}: {what}")
        return streams[0]

    def _header_duration_s(self) -> float | None:
        # The stream's own duration beats the container's, which in a video may be the picture's.
        stream, container = self.stream, self.container
        if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
            return float(stream.duration * stream.time_base)
        if container.duration is not None and container.duration > 0:
            return container.duration / av.time_base
        return None

    def _check_length(self, seconds: float, found_while_decoding: bool = False) -> None:
        if seconds <= self.max_duration_s:
            return
        how = "found while decoding" if found_while_decoding else f"it lasts {_clock(seconds)}"
        raise AudioError(f"{self.name}: longer than the limit of {_clock(self.max_duration_s)} ({how})")

    def _frames(self) -> Iterator[av.AudioFrame]:
        n_bad, last_error = 0, None
        for packet in self._packets():
            try:
                frames = packet.decode()
            except _AVError as exc:  # like ffmpeg's CLI, skip a damaged packet and carry on
                n_bad, last_error = n_bad + 1, exc
                continue
            for frame in (f for f in frames if f.samples):
                self.decoded_s += frame.samples / frame.sample_rate
                self._check_length(self.decoded_s, found_while_decoding=True)
                yield frame
        self._report_damage(n_bad, last_error)

    def _packets(self) -> Iterator[av.Packet]:
        packets = self.container.demux(self.stream)
        while True:
            try:
                yield next(packets)
            except StopIteration:
                return
            except _AVError as exc:
                self._stopped_early(exc)
                return

    def _stopped_early(self, exc: BaseException) -> None:
        # A cut-off download still holds useful audio, so keep what decoded; with none, give up.
        if self.decoded_s == 0:
            raise AudioError(f"{self.name}: cannot read the audio ({_reason(exc)})") from exc
        log.warning("%s: reading stopped after %s (%s); keeping the audio decoded so far",
                    self.name, _clock(self.decoded_s), _reason(exc))

    def _report_damage(self, n_bad: int, last_error: BaseException | None) -> None:
        if last_error is not None and self.decoded_s == 0:
            reason = _reason(last_error)
            raise AudioError(f"{self.name}: cannot decode the audio ({reason})") from last_error
        if n_bad:
            log.warning("%s: skipped %d damaged packet(s) (%s)", self.name, n_bad, _reason(last_error))
        # Headers of truncated files still give the full length; say so rather than silently
        # returning a fraction of the recording. The margin allows for headers that estimate.
        expected = self.header_duration_s
        if expected and 0 < self.decoded_s < expected - max(0.25, 0.05 * expected):
            log.warning("%s: only %s of audio decoded, the header says %s; the file may be truncated",
                        self.name, _clock(self.decoded_s), _clock(expected))


class _Resampler:
    """Streaming soxr resampler for mono float32; passes audio through when the rates match."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self._stream = None if in_rate == out_rate else soxr.ResampleStream(
            in_rate, out_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)

    def push(self, mono: np.ndarray) -> np.ndarray:
        return mono if self._stream is None else self._stream.resample_chunk(mono)

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, np.float32)
        return self._stream.resample_chunk(np.zeros(0, np.float32), last=True)


class _Output:
    """The output array: preallocated from the header's duration, overflow kept as a list.

    Growing a large array in place (ndarray.resize) was measured to copy it, so a header that
    under-reports costs exactly one concatenation at the end and never repeated copies.
    """

    def __init__(self, expected_samples: int | None) -> None:
        self._buf = np.empty(expected_samples or 0, np.float32)
        self._n = 0
        self._overflow: list[np.ndarray] = []

    def append(self, block: np.ndarray) -> None:
        fit = 0 if self._overflow else min(len(block), len(self._buf) - self._n)
        self._buf[self._n:self._n + fit] = block[:fit]
        self._n += fit
        if fit < len(block):
            self._overflow.append(block[fit:])

    def result(self) -> np.ndarray:
        if self._overflow:
            return np.concatenate([self._buf[:self._n], *self._overflow])
        self._buf.resize(self._n, refcheck=False)  # shrinking does not copy; no view of it exists
        return self._buf


def _mono(frame: av.AudioFrame) -> np.ndarray:
    """The frame's channels averaged, as float32 in [-1, 1]."""
    data = frame.to_ndarray()
    if frame.format.is_packed:  # packed formats interleave the channels in one row
        data = data.reshape(-1, frame.layout.nb_channels).T
    # Adding rows is ~10x faster than data.mean(axis=0) on interleaved (strided) channels.
    mono = data[0].astype(np.float32)
    for channel in data[1:]:
        mono += channel
    name = frame.format.packed.name
    if name == "u8":
        mono -= 128.0 * len(data)
    mono *= _INT_SCALE.get(name, 1.0) / len(data)
    return mono


def _reason(exc: BaseException) -> str:
    """FFmpeg's short description of an error, on one line and without the file name."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _printable(text: str) -> str:
    # A newline in a file name must not turn the one-line error message into two.
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _clock(seconds: float) -> str:
    """Seconds as 'h:mm:ss' (or 's.ss s' below a minute) for messages."""
    if seconds < 60:
        return f"{seconds:.2f} s"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"

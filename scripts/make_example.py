"""Make keyscribe's bundled example and the piano spectrograms of docs/pianos/.

    .venv/bin/python scripts/make_example.py            # both
    .venv/bin/python scripts/make_example.py --no-docs  # only src/keyscribe/examples/

The piece: the first seven bars and a closing chord of J. S. Bach's Prelude in C major, BWV 846 (public
domain), written out below note by note and "played" with human-like timing (a slow rubato, a small
random spread of onsets and chord notes), dynamics (a shaped phrase, accented bass, random variation)
and half-bar legato pedalling. Everything random comes from a fixed seed: the script makes the same
example every time.

Writes
- src/keyscribe/examples/example.mid: the ground truth (notes with velocities, CC64 pedal);
- src/keyscribe/examples/example.ogg: that MIDI rendered by the Salamander Grand sampler at 48 kHz with a
  mild simulated room (RT60 ~0.7 s), as Ogg Opus 96 kb/s;
- docs/pianos/<piano>.png: the first two bars on every installed piano, as log-frequency spectrograms.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from keyscribe.data import augment as A  # noqa: E402
from keyscribe.data import render as R  # noqa: E402
from keyscribe.midi import read_midi, write_midi  # noqa: E402
from keyscribe.notes import Note, PedalInterval, Performance  # noqa: E402

SEED = 846
# Each bar: the two left-hand notes (held through each half bar) and the three right-hand notes that the
# figure n3 n4 n5 n3 n4 n5 repeats, twice per bar (MIDI pitches; 60 = middle C).
BARS = [
    (60, 64, 67, 72, 76),  # C
    (60, 62, 69, 74, 77),  # Dm7 / C
    (59, 62, 67, 74, 77),  # G7 / B
    (60, 64, 67, 72, 76),  # C
    (60, 64, 69, 76, 81),  # Am / C
    (60, 62, 66, 69, 74),  # D7 / C
    (59, 62, 67, 74, 79),  # G / B
]
FINAL_CHORD = (48, 55, 60, 64, 67, 72)  # C, held
BEAT_S = 60.0 / 72  # quarter note at 72 bpm


def performance(seed: int = SEED) -> Performance:
    rng = np.random.default_rng(seed)
    sixteenth = BEAT_S / 4
    notes: list[Note] = []
    pedals: list[PedalInterval] = []
    t = 0.4  # a little silence first
    n_halves = 2 * len(BARS)
    for h in range(n_halves):
        bar = BARS[h // 2]
        # Rubato: a touch of push in the middle, a broadening over the last bar.
        push = -0.04 * np.sin(np.pi * h / n_halves)
        broaden = 0.05 * (h - (n_halves - 3)) if h > n_halves - 3 else 0.0
        stretch = 1.0 + push + broaden
        step = sixteenth * stretch
        # Dynamics: a phrase swelling to bar 5, the bass accented, every note a little different.
        swell = 8 * np.sin(np.pi * min(h, 10) / 10)
        half_start = t
        times = [half_start + i * step + rng.normal(0, 0.006) for i in range(8)]
        times[0] = max(times[0], half_start - 0.004)
        order = [0, 1, 2, 3, 4, 2, 3, 4]
        end_half = half_start + 8 * step
        for i, which in enumerate(order):
            pitch = bar[which]
            if i == 0:
                vel, off = 62 + swell + rng.normal(0, 3), end_half - 0.03  # LH: held through the half bar
            elif i == 1:
                vel, off = 52 + swell + rng.normal(0, 3), end_half - 0.04
            else:
                accent = 4 if i in (2, 5) else 0
                vel = 48 + swell + accent + rng.normal(0, 4)
                off = times[i] + step * rng.uniform(0.85, 1.15)  # legato-ish sixteenths
            notes.append(Note(float(max(0.0, times[i])), float(off), pitch, int(np.clip(round(vel), 20, 110))))
        # Pedal: lifted at the half bar's first note (harmony change), pressed again ~0.1 s later.
        down = half_start + rng.uniform(0.08, 0.12)
        up = end_half + rng.uniform(0.0, 0.02)
        pedals.append(PedalInterval(float(down), float(up)))
        t = end_half
    # Closing chord, rolled slightly from the bass up, held and pedalled.
    for i, pitch in enumerate(FINAL_CHORD):
        onset = t + 0.05 + 0.012 * i + rng.normal(0, 0.003)
        notes.append(Note(float(onset), float(t + 2.3), pitch, int(58 + rng.integers(-4, 5))))
    pedals.append(PedalInterval(float(t + 0.15), float(t + 2.6)))
    return Performance(tuple(notes), tuple(pedals))


def write_ogg_opus(audio: np.ndarray, sample_rate: int, path: Path, kbps: int = 96) -> None:
    import av
    with av.open(str(path), "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=sample_rate, layout="mono")
        stream.bit_rate = kbps * 1000
        frame = av.AudioFrame.from_ndarray(audio[None, :].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def make_example(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    mid = out_dir / "example.mid"
    write_midi(performance(), mid)
    truth = read_midi(mid)  # render exactly what the file holds (its tick grid), so the labels are exact
    sr = 48000
    dry = R.render(truth, "salamander", sr, seed=SEED, tail_s=1.2)
    h, pre, room = A.simulate_rir(np.random.default_rng(7), sr, rt60_range=(0.6, 0.8))
    h = h.copy()
    h[pre + int(0.0025 * sr):] *= np.float32(0.5)  # mild: the direct sound dominates
    wet = A.convolve_aligned(dry, h, pre)
    wet *= np.float32(0.8 / np.max(np.abs(wet)))
    ogg = out_dir / "example.ogg"
    write_ogg_opus(wet, sr, ogg)
    print(f"{mid}: {len(truth.notes)} notes, {len(truth.pedals)} pedal presses, {truth.end_s:.1f} s")
    print(f"{ogg}: {len(wet) / sr:.1f} s, {ogg.stat().st_size / 1024:.0f} KiB; room RT60 {room['rt60_s']:.2f} s, "
          f"{room['distance_m']:.1f} m")
    return mid


def spectrogram_png(audio: np.ndarray, sr: int, title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import stft

    f, t, z = stft(audio, sr, nperseg=2048, noverlap=2048 - 160)
    db = 20 * np.log10(np.abs(z) + 1e-9)
    db -= db.max()
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=100)
    keep = f >= 25
    mesh = ax.pcolormesh(t, f[keep], db[keep], vmin=-80, vmax=0, cmap="magma", shading="auto")
    ax.set_yscale("log")
    ax.set_ylim(25, sr / 2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(mesh, ax=ax, label="dB re max", pad=0.01)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def make_docs(doc_dir: Path, truth: Performance) -> None:
    doc_dir.mkdir(parents=True, exist_ok=True)
    end = 0.4 + 8 * BEAT_S * 1.02  # the first two bars
    phrase = Performance(tuple(n for n in truth.notes if n.onset_s < end),
                         tuple(p for p in truth.pedals if p.onset_s < end))
    sr = 16000
    for name in R.available_pianos():
        y = R.render(phrase, name, sr, seed=SEED, tail_s=1.0)
        spectrogram_png(y, sr, f"{name}: BWV 846 bars 1-2 (16 kHz, peak-normalised)", doc_dir / f"{name}.png")
        print(f"{doc_dir / (name + '.png')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-docs", action="store_true", help="skip docs/pianos/*.png")
    args = parser.parse_args(argv)
    mid = make_example(ROOT / "src" / "keyscribe" / "examples")
    if not args.no_docs:
        make_docs(ROOT / "docs" / "pianos", read_midi(mid))
    return 0


if __name__ == "__main__":
    sys.exit(main())

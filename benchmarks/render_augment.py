"""Throughput of the training-data renderers and of the augmentation, in x real time per core.

    .venv/bin/python benchmarks/render_augment.py [--minutes 12] [--json out.json]

Plays real ASAP performances (../shared/data/asap; a Bach prelude, a Beethoven sonata movement and a
Chopin ballade, cut to about --minutes in all) through every installed piano at 16 kHz, then augments
each render with the default `AugmentConfig` and, separately, with every transform forced on. Times are
CPU seconds of this process (`time.process_time`), so other work on the machine does not inflate them;
set-up that happens once per process (soundfont loading, FluidSynth latency calibration, the RIR bank,
the sampler's sample cache) is done before timing and reported on its own.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from keyscribe.data import augment as A  # noqa: E402
from keyscribe.data import render as R  # noqa: E402
from keyscribe.midi import read_midi  # noqa: E402
from keyscribe.notes import Performance  # noqa: E402

ASAP = ROOT.parent / "shared" / "data" / "asap"
PIECES = ["Bach/Prelude/bwv_846", "Beethoven/Piano_Sonatas/14-3", "Chopin/Ballades/1"]
SR = 16000


def cut(perf: Performance, seconds: float) -> Performance:
    return Performance(tuple(n for n in perf.notes if n.offset_s <= seconds),
                       tuple(p for p in perf.pedals if p.offset_s <= seconds))


def load_pieces(minutes: float) -> list[tuple[str, Performance]]:
    out = []
    per_piece = minutes * 60 / len(PIECES)
    for folder in PIECES:
        files = sorted(p for p in (ASAP / folder).glob("*.mid") if p.name != "midi_score.mid")
        if not files:
            continue
        perf = cut(read_midi(files[0]), per_piece)
        out.append((f"{folder}/{files[0].name}", perf))
    return out


def cpu(fn, *args, **kwargs):
    t = time.process_time()
    result = fn(*args, **kwargs)
    return result, time.process_time() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--pianos", nargs="*", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    pieces = load_pieces(args.minutes)
    hours = sum(p.end_s + R.DEFAULT_TAIL_S for _, p in pieces) / 3600
    print(f"{len(pieces)} performances, {hours * 60:.1f} min: {', '.join(name for name, _ in pieces)}")
    report: dict = {"minutes": hours * 60, "pieces": [n for n, _ in pieces], "pianos": {}, "augment": {}}

    _, t_bank = cpu(A.rir_bank, SR)
    report["rir_bank_s"] = t_bank
    print(f"RIR bank ({A.AugmentConfig().rir_bank_size} rooms): {t_bank:.1f} s once per process")

    renders = {}
    for name in args.pianos or R.available_pianos():
        tiny = Performance(pieces[0][1].notes[:3])
        _, t_setup = cpu(R.render, tiny, name, SR)  # soundfont load + calibration, or sample decoding
        if name == "salamander":
            from keyscribe.data import sampler as S
            _, t_warm = cpu(S.get_sampler(SR).warm)
            t_setup += t_warm
        total = 0.0
        audio = []
        for _, perf in pieces:
            y, t = cpu(R.render, perf, name, SR)
            total += t
            audio.append(y)
        renders[name] = audio
        x = hours * 3600 / total
        report["pianos"][name] = {"render_x_realtime": x, "setup_s": t_setup}
        print(f"render {name:17s} {x:8.1f} x real time per core   (set-up once per process {t_setup:.1f} s)")

    some = renders[next(iter(renders))]
    rng = np.random.default_rng(0)
    per_transform = {}
    for name in A.TRANSFORMS:
        cfg = A.AugmentConfig(**{f"p_{n}": float(n == name) for n in A.TRANSFORMS})
        t = sum(cpu(A.augment, y, SR, rng, cfg)[1] for y in some)
        per_transform[name] = t / hours
    forced = A.AugmentConfig(**{f"p_{n}": 1.0 for n in A.TRANSFORMS})
    t_all = sum(cpu(A.augment, y, SR, rng, forced)[1] for y in some) / hours
    t_default = 0.0
    reps = 4
    for _ in range(reps):
        t_default += sum(cpu(A.augment, y, SR, rng)[1] for y in some)
    t_default = t_default / reps / hours
    report["augment"] = {"s_per_hour": per_transform, "all_on_s_per_hour": t_all, "default_s_per_hour": t_default}
    print("augmentation, CPU seconds per hour of 16 kHz audio:")
    for name, s in per_transform.items():
        print(f"  {name:9s} {s:7.1f} s/h  ({3600 / s:7.0f} x real time)")
    print(f"  all on    {t_all:7.1f} s/h  ({3600 / t_all:7.0f} x)")
    print(f"  default   {t_default:7.1f} s/h  ({3600 / t_default:7.0f} x)  (expected cost of AugmentConfig())")

    print("render + default augmentation, x real time per core:")
    for name, r in report["pianos"].items():
        both = 1 / (1 / r["render_x_realtime"] + t_default / 3600)
        r["render_augment_x_realtime"] = both
        print(f"  {name:17s} {both:8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

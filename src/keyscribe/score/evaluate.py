"""score-eval: metre, key, hands and notation accuracy on held-out ASAP performances.

Per performance:
- beat F1 and downbeat F1: mir_eval.beat.f_measure, 70 ms window, no trimming of the first 5 s;
- beat_f1_any_level: beat F1 against the annotated beats, two or three times as many of them, or every
  second or third one (any phase), whichever is best: the beats tracked when the annotated metrical
  level, a notational choice, is set aside;
- beat_amlt: mir_eval.beat.continuity's AMLt (beats within 17.5% of the beat period in phase and period,
  allowing double or half tempo and the off-beat): the literature's level-free continuity measure;
- ts_acc: beats per bar and simple/compound equal to the annotated first time signature's
  (ts_string_acc: the same string, e.g. '3/4');
- key_acc: estimated key-signature fifths equal to the annotated first key signature (enharmonic
  equivalents allowed; relative major/minor share a signature);
- notation checks, relating performance notes to score notes through the ASAP beat annotations (same
  pitch, nearest score position within half a beat): onset_est, the fraction of notes whose quantised
  onset in beats from the piece start equals the score's (the two beat counts aligned by their most
  common offset), with the estimated beats; onset_est_local, the same for each inter-onset interval
  between consecutive score onsets, so one beat-tracking slip costs one note rather than the rest of
  the piece; onset_oracle, onset_est with the annotated beats (the quantiser alone);
- hands_acc / hands_fixed_acc: staff accuracy of the hand tracker and of a fixed split at middle C on
  the piece's score MIDI (its two tracks are the two staves).
Metrics are averaged over a piece's performances, then over pieces.

With `hear` (`audio_roundtrip`), each performance is first played on a rendered piano and transcribed by
keyscribe's model, and the score engine reads the transcribed notes: the input it gets in real use.
The annotations still apply, since rendering keeps the performance's timeline.
"""
from __future__ import annotations

import json
import time
import warnings
from collections import defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

from keyscribe.notes import Performance
from keyscribe.score import asap

METRICS = ("beat_f1", "beat_f1_any_level", "beat_amlt", "downbeat_f1", "ts_acc", "ts_string_acc", "key_acc",
           "onset_est", "onset_est_local", "onset_oracle", "hands_acc", "hands_fixed_acc")


def _annotated_compound(ts: str) -> bool:
    num, den = (int(x) for x in ts.split("/"))
    return num % 3 == 0 and num > 3 and den >= 8


def _score_positions(entry: asap.Entry):
    import pretty_midi

    from keyscribe.score.beats import beat_positions
    sann = asap.read_annotations(entry.score_annotations)
    pm = pretty_midi.PrettyMIDI(str(entry.score_midi))
    on = np.array([n.start for i in pm.instruments for n in i.notes])
    pitch = np.array([n.pitch for i in pm.instruments for n in i.notes])
    return beat_positions(on, sann.beats), pitch, len(sann.beats)


def hands_agreement(entry: asap.Entry) -> tuple[float, float]:
    """Staff accuracy of the hand tracker and of a fixed split at middle C on the score MIDI, whose two
    tracks are the two staves (upper first)."""
    import pretty_midi

    from keyscribe.notes import Note
    from keyscribe.score.hands import split_hands
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = pretty_midi.PrettyMIDI(str(entry.score_midi))
    tracks = [i for i in pm.instruments if i.notes]
    if len(tracks) != 2:
        return float("nan"), float("nan")
    notes, ref = [], []
    for s, inst in enumerate(tracks):
        for n in inst.notes:
            if 21 <= n.pitch <= 108 and n.end > n.start:
                notes.append(Note(float(n.start), float(n.end), int(n.pitch), max(1, int(n.velocity))))
                ref.append(s)
    ref = np.array(ref)
    if np.mean([n.pitch for n, r in zip(notes, ref) if r == 0]) < np.mean([n.pitch for n, r in zip(notes, ref) if r == 1]):
        ref = 1 - ref
    got = split_hands(notes)
    fixed = split_hands(notes, method="fixed")
    return float(np.mean(got == ref)), float(np.mean(fixed == ref))


def onset_agreement(qnotes, perf_notes, ann: asap.Annotations, score_pos, score_pitch, local: bool = False) -> float:
    """Fraction of matched notes whose quantised onset (beats from the first note) equals the score's."""
    from keyscribe.score.beats import beat_positions
    if not qnotes:
        return float("nan")
    xp = beat_positions(np.array([perf_notes[q.index].onset_s for q in qnotes]), ann.beats)
    ref, est = [], []
    for q, x in zip(qnotes, xp):
        cand = np.flatnonzero(score_pitch == q.pitch)
        if not len(cand):
            continue
        j = cand[np.argmin(np.abs(score_pos[cand] - x))]
        if abs(score_pos[j] - x) > 0.5:
            continue
        ref.append(score_pos[j])
        est.append(float(q.onset))
    if not ref:
        return float("nan")
    ref, est = np.array(ref), np.array(est)
    if local:
        # consecutive distinct onsets: is the quantised inter-onset interval (in beats) the score's?
        order = np.argsort(ref, kind="stable")
        r, e = ref[order], est[order]
        keep = np.concatenate([[True], np.diff(r) > 1e-6])
        r, e = r[keep], e[keep]
        if len(r) < 2:
            return float("nan")
        return float(np.mean(np.abs(np.diff(r) - np.diff(e)) < 1e-3))
    # the two counts may start at different beats: align them by the most common difference
    diff = np.round((est - ref) * 24) / 24
    vals, counts = np.unique(diff, return_counts=True)
    shift = vals[np.argmax(counts)]
    return float(np.mean(np.abs(est - ref - shift) < 1e-3))


def beat_f1_any_level(reference: np.ndarray, estimated: np.ndarray, window: float = 0.07) -> float:
    """The best mir_eval beat F1 of `estimated` (s) against `reference` (s) at its own level, at two or
    three times its rate (beats spaced evenly in between) or at a half or a third of it (any phase)."""
    import mir_eval

    period = np.diff(reference)
    levels = [reference]
    for k in (2, 3):
        between = [reference[:-1] + period * i / k for i in range(1, k)]
        levels.append(np.sort(np.concatenate([reference, *between])))
        levels += [reference[phase::k] for phase in range(k)]
    return max(float(mir_eval.beat.f_measure(level, estimated, window)) for level in levels)


def oracle_metre(ann: asap.Annotations):
    from keyscribe.score.beats import Metre
    ts = ann.time_signatures[0][1] if ann.time_signatures else "4/4"
    first_db = int(np.searchsorted(ann.beats, ann.downbeats[0])) if len(ann.downbeats) else 0
    return Metre(ann.beats, ann.downbeats, ann.beats_per_bar, _annotated_compound(ts),
                 60.0 / float(np.median(np.diff(ann.beats))), first_db)


def audio_roundtrip(piano: str, cache_dir: str | Path | None = None, model=None) -> Callable:
    """A function (entry, performance) -> the performance as keyscribe transcribes it after rendering it on
    `piano` (a `keyscribe.data.render.PIANOS` name) with `model` (None: the shipped one). Transcriptions
    are kept as MIDI in `cache_dir`, one per performance, piano, model and input level, and reused."""
    from keyscribe.data.render import PianoUnavailableError, available_pianos, render
    from keyscribe.inference import INPUT_LOUDNESS_DBFS, load_model
    from keyscribe.midi import read_midi, write_midi
    from keyscribe.transcribe import transcribe

    if piano not in available_pianos():
        raise PianoUnavailableError(f"piano {piano!r} is not installed; installed: {', '.join(available_pianos())}")
    runtime = load_model(model)
    # one folder per model and the level transcribe() brings audio to
    cache = Path(cache_dir) / piano / f"{runtime.model_id}-at{INPUT_LOUDNESS_DBFS:+g}dBFS" if cache_dir else None

    def hear(entry: asap.Entry, perf: Performance) -> Performance:
        path = cache / f"{entry.name.replace('/', '__')}.mid" if cache else None
        if path is not None and path.is_file():
            return read_midi(path)
        heard = transcribe(render(perf, piano), model=runtime).performance
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_midi(heard, path)
        return heard

    hear.description = f"rendered on {piano}, transcribed by {runtime.model_id}"
    return hear


def evaluate_entry(entry: asap.Entry, method: str = "auto", notation: bool = True, hear: Callable | None = None
                   ) -> dict:
    import mir_eval

    from keyscribe.score import beats, hands, quantize, spelling
    from keyscribe.score.io import load_performance

    perf = load_performance(entry.performance)
    if hear is not None:
        perf = hear(entry, perf)
    ann = asap.read_annotations(entry.annotations)
    metre = beats.estimate_metre(perf, method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = {
            "beat_f1": float(mir_eval.beat.f_measure(ann.beats, metre.beats, 0.07)),
            "beat_f1_any_level": beat_f1_any_level(ann.beats, metre.beats),
            "beat_amlt": float(mir_eval.beat.continuity(ann.beats, metre.beats)[3]),
            "downbeat_f1": float(mir_eval.beat.f_measure(ann.downbeats, metre.downbeats, 0.07)),
        }
    ts = ann.time_signatures[0][1] if ann.time_signatures else "4/4"
    res["ts_acc"] = float(metre.beats_per_bar == ann.beats_per_bar and metre.compound == _annotated_compound(ts))
    res["ts_string_acc"] = float(metre.time_signature == ts)
    key = spelling.estimate_key(perf.notes)
    ref_key = ann.key_signatures[0][1] if ann.key_signatures else 0
    res["key_acc"] = float(key.fifths == ref_key or abs(key.fifths - ref_key) == 12)
    res["est"] = {"time_signature": metre.time_signature, "tempo_bpm": round(metre.tempo_bpm, 1),
                  "key_fifths": key.fifths}
    res["ref"] = {"time_signature": ts, "beats_per_bar": ann.beats_per_bar, "key_fifths": ref_key,
                  "tempo_bpm": round(60.0 / float(np.median(np.diff(ann.beats))), 1)}
    res["onset_est"] = res["onset_oracle"] = res["onset_est_local"] = float("nan")
    if notation and entry.score_midi.is_file() and entry.score_annotations.is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score_pos, score_pitch, n_score_beats = _score_positions(entry)
        if n_score_beats == len(ann.beats):  # performance and score annotations correspond beat by beat
            notes = list(perf.notes)
            staff = hands.split_hands(notes)
            q_est = quantize.quantize(notes, staff, metre)
            res["onset_est"] = onset_agreement(q_est, notes, ann, score_pos, score_pitch)
            res["onset_est_local"] = onset_agreement(q_est, notes, ann, score_pos, score_pitch, local=True)
            q_or = quantize.quantize(notes, staff, oracle_metre(ann))
            res["onset_oracle"] = onset_agreement(q_or, notes, ann, score_pos, score_pitch)
    res["hands_acc"] = res["hands_fixed_acc"] = float("nan")
    if notation and entry.score_midi.is_file():
        res["hands_acc"], res["hands_fixed_acc"] = hands_agreement(entry)
    return res


def evaluate_asap(asap_dir: str | None = None, split: str = "test", method: str = "auto",
                  max_per_piece: int = 2, notation: bool = True, limit: int | None = None,
                  progress: bool = True, hear: Callable | None = None) -> dict:
    if split == "validation":  # the training pieces kept out of the networks' training to choose their weights
        ents = [e for e in asap.entries(asap_dir, split="train") if asap.is_validation(e.composer, e.title)]
    else:
        ents = asap.entries(asap_dir, split=split)
    by_piece: dict[tuple[str, str], list[asap.Entry]] = defaultdict(list)
    for e in ents:
        if len(by_piece[(e.composer, e.title)]) < max_per_piece:
            by_piece[(e.composer, e.title)].append(e)
    pieces = sorted(by_piece)[:limit] if limit else sorted(by_piece)
    per_perf = []
    per_piece = {}
    t0 = time.time()
    for pc in pieces:
        rows = []
        for e in by_piece[pc]:
            r = evaluate_entry(e, method=method, notation=notation, hear=hear)
            r["name"] = e.name
            rows.append(r)
            per_perf.append(r)
            if progress:
                print(f"{e.name[:60]:60s} beat {r['beat_f1']:.2f} db {r['downbeat_f1']:.2f} "
                      f"ts {r['est']['time_signature']}/{r['ref']['time_signature']} "
                      f"key {r['key_acc']:.0f} onset {r['onset_est']:.2f}/{r['onset_oracle']:.2f} "
                      f"({time.time() - t0:.0f}s)", flush=True)
        per_piece["/".join(pc)] = {m: float(np.nanmean([r[m] for r in rows])) if any(
            not np.isnan(r[m]) for r in rows) else float("nan") for m in METRICS}
    summary = {m: float(np.nanmean([v[m] for v in per_piece.values()])) for m in METRICS}
    return {"method": method, "split": split, "input": getattr(hear, "description", "performance MIDI"),
            "pieces": len(per_piece), "performances": len(per_perf),
            "summary": summary, "per_piece": per_piece, "per_performance": per_perf}


def format_summary(result: dict) -> str:
    s = result["summary"]
    pieces = "held-out" if result["split"] == "test" else result["split"]
    lines = [f"score-eval ({result['method']}) on {result['pieces']} {pieces} ASAP pieces, "
             f"{result['performances']} performances, input: {result['input']} "
             "(mean over pieces):"]
    for m in METRICS:
        lines.append(f"  {m:14s} {s[m]:.3f}")
    return "\n".join(lines)


def write_json(result: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(result, indent=1, default=lambda o: str(o) if isinstance(o, Fraction) else o))

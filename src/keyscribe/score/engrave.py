"""Engraving: quantised notes -> a two-staff music21 score -> MusicXML, and verovio -> SVG / PNG / PDF.

Measures are built here (not by music21's makeMeasures) so that an anacrusis, ties across barlines and
note values are under control: every note or rest is cut into values a pianist reads (no tuplets but
eighth-note triplets, a triplet never crosses a beat, an off-beat note crosses a beat only from a half
beat to a half beat), and tied pieces are merged back when one value can say it.
"""
from __future__ import annotations

import math
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

from keyscribe.errors import ScoreError
from keyscribe.score.beats import Metre
from keyscribe.score.quantize import QNote
from keyscribe.score.spelling import Key

F = Fraction
_PLAIN = [F(6), F(4), F(3), F(2), F(3, 2), F(1), F(3, 4), F(1, 2), F(3, 8), F(1, 4), F(1, 8)]
_TRIPLET = [F(2, 3), F(1, 3), F(1, 6)]
EXPRESSIBLE = sorted(_PLAIN + _TRIPLET, reverse=True)


def _is_triplet(e: Fraction) -> bool:
    return e.denominator % 3 == 0


def split_value(o: Fraction, d: Fraction, beat: Fraction, compound: bool, bar: Fraction) -> list[Fraction]:
    """Cut a note of `d` quarter notes starting `o` quarter notes into its measure into readable values."""
    out: list[Fraction] = []
    sub = beat / 3 if compound else beat / 2
    while d > 0:
        chosen = None
        for e in EXPRESSIBLE:
            if e > d:
                continue
            end = o + e
            if end > bar:
                continue
            same_beat = math.floor(o / beat) == math.ceil(end / beat) - 1
            if _is_triplet(e) and not same_beat:
                continue
            if (o % beat) != 0 and not same_beat:
                if _is_triplet(e) or (o % sub) != 0 or (end % sub) != 0:
                    continue
                if end - (o - o % beat) > 2 * beat and not compound:
                    continue  # a syncopation longer than two beats is written with a tie
            if (o % beat) == 0 and not same_beat and (end % sub) != 0:
                continue
            chosen = e
            break
        if chosen is None:
            chosen = d  # cannot be cut further into plain values: let music21 express it
        out.append(chosen)
        o += chosen
        d -= chosen
    return out


def _pitch(m21, spelled: tuple[str, int, int]):
    step, alter, octave = spelled
    p = m21.pitch.Pitch(step=step, octave=octave)
    if alter:
        p.accidental = m21.pitch.Accidental(alter)
    return p


def build_score(qnotes: list[QNote], spelled: dict[int, tuple[str, int, int]], metre: Metre, key: Key,
                title: str = "", tempo_bpm: float | None = None):
    """A music21 `Score` with one piano part on two staves (PartStaff pair joined by a brace)."""
    import music21 as m21

    M = metre.beats_per_bar
    beat = metre.beat_ql
    bar = beat * M

    # chords per staff, each held until its key release or the next onset in the staff
    chords: list[list[tuple[Fraction, Fraction, list[QNote]]]] = [[], []]
    for s in (0, 1):
        by_on: dict[Fraction, list[QNote]] = defaultdict(list)
        for q in qnotes:
            if q.staff == s:
                by_on[q.onset].append(q)
        ons = sorted(by_on)
        for i, on in enumerate(ons):
            end = max(q.offset for q in by_on[on])
            if i + 1 < len(ons):
                # legato notation: a short gap before the next onset is not written as a rest
                nxt = ons[i + 1]
                if nxt - end <= max(Fraction(1, 2), end - on) or nxt - on <= 1:
                    end = nxt
                end = min(end, nxt)
            chords[s].append((on, end, sorted(by_on[on], key=lambda q: q.pitch)))

    # an empty performance gets one bar of rests
    q_min = min((q.onset for q in qnotes), default=Fraction(0))
    q_max = max((c[1] for s in (0, 1) for c in chords[s]), default=Fraction(M))
    first_bar = math.floor(q_min / M)
    last_bar = math.ceil(q_max / M) - 1
    pickup_start = Fraction(math.floor(q_min))  # the first measure starts at the first sounding beat

    score = m21.stream.Score()
    md = m21.metadata.Metadata()
    md.title = title or "Untitled"
    md.composer = ""
    score.metadata = md
    staves = []
    for s in (0, 1):
        part = m21.stream.PartStaff()
        part.id = f"P1-Staff{s + 1}"
        clef_now = "treble" if s == 0 else "bass"
        for k in range(first_bar, last_bar + 1):
            m_start = Fraction(k * M)
            if k == first_bar:
                m_start = max(m_start, pickup_start)
            m_end = Fraction((k + 1) * M)
            meas = m21.stream.Measure(number=k - first_bar + (0 if pickup_start > first_bar * M else 1))
            if k == first_bar:
                meas.insert(0, m21.clef.TrebleClef() if s == 0 else m21.clef.BassClef())
                meas.insert(0, m21.key.KeySignature(key.fifths))
                meas.insert(0, m21.meter.TimeSignature(metre.time_signature))
                if s == 0 and tempo_bpm:
                    unit = m21.note.Note(type="quarter", dots=1) if metre.compound else m21.note.Note(type="quarter")
                    meas.insert(0, m21.tempo.MetronomeMark(number=int(round(tempo_bpm)), referent=unit.duration))
                if m_start > k * M:
                    meas.paddingLeft = float((m_start - k * M) * beat)
            # clef changes with hysteresis on the measure's mean pitch
            ps = [q.pitch for on, end, qs in chords[s] if m_start <= on < m_end for q in qs]
            if ps and k > first_bar:
                mean = sum(ps) / len(ps)
                new = clef_now
                if clef_now == "bass" and mean >= 64 and min(ps) >= 57:
                    new = "treble"
                elif clef_now == "treble" and mean < 56 and max(ps) <= 64:
                    new = "bass"
                elif s == 0 and clef_now == "bass" and mean > 60:
                    new = "treble"
                elif s == 1 and clef_now == "treble" and mean < 58:
                    new = "bass"
                if new != clef_now:
                    meas.insert(0, m21.clef.TrebleClef() if new == "treble" else m21.clef.BassClef())
                    clef_now = new
            elif ps and k == first_bar and s == 1 and sum(ps) / len(ps) >= 64 and min(ps) >= 57:
                meas.remove(meas.getElementsByClass("Clef")[0])
                meas.insert(0, m21.clef.TrebleClef())
                clef_now = "treble"
            _fill_measure(m21, meas, chords[s], spelled, m_start, m_end, beat, metre.compound, bar)
            part.append(meas)
        staves.append(part)
    for part in staves:
        score.insert(0, part)
    score.insert(0, m21.layout.StaffGroup(staves, name="Piano", abbreviation="Pno.", symbol="brace",
                                          barTogether=True))
    for part in staves:
        part.makeBeams(inPlace=True)
        for meas in part.getElementsByClass("Measure"):
            m21.stream.makeNotation.makeTupletBrackets(meas.notesAndRests.stream(), inPlace=True)
    for part in staves:
        part.makeAccidentals(inPlace=True, cautionaryPitchClass=False, overrideStatus=False)
    return score


def _fill_measure(m21, meas, chords, spelled, m_start: Fraction, m_end: Fraction, beat: Fraction,
                  compound: bool, bar: Fraction) -> None:
    """Put the chords (and rests between them) of one staff that sound in [m_start, m_end) into `meas`."""
    pos = m_start  # in beats
    items = []  # (start_beats, end_beats, chord_or_None, tie_in, tie_out)
    for on, end, qs in chords:
        if end <= m_start or on >= m_end:
            continue
        a, b = max(on, m_start), min(end, m_end)
        if a > pos:
            items.append((pos, a, None, False, False))
        items.append((a, b, qs, on < m_start, end > m_end))
        pos = b
    if pos < m_end:
        items.append((pos, m_end, None, False, False))
    # measure offsets in quarter notes; a pickup measure's content starts at 0
    for a, b, qs, tie_in, tie_out in items:
        o = (a - m_start) * beat
        offset_in_bar = o + (bar - (m_end - m_start) * beat)  # position in a full bar (for beat grouping)
        values = split_value(offset_in_bar, (b - a) * beat, beat, compound, bar)
        if qs is None and a == m_start and b == m_end and len(values) > 1 and (m_end - m_start) * beat == bar:
            r = m21.note.Rest()
            r.duration = m21.duration.Duration(float(bar))
            r.fullMeasure = True
            meas.insert(float(o), r)
            continue
        for j, v in enumerate(values):
            if qs is None:
                el = m21.note.Rest()
            elif len(qs) == 1:
                el = m21.note.Note(_pitch(m21, spelled[qs[0].index]))
            else:
                el = m21.chord.Chord([_pitch(m21, spelled[q.index]) for q in qs])
            el.duration = m21.duration.Duration(v)
            if qs is not None:
                starts = j + 1 < len(values) or tie_out
                stops = j > 0 or tie_in
                if starts and stops:
                    el.tie = m21.tie.Tie("continue")
                elif starts:
                    el.tie = m21.tie.Tie("start")
                elif stops:
                    el.tie = m21.tie.Tie("stop")
            meas.insert(float(o) if o.denominator in (1, 2, 4, 8) else o, el)
            o += v


# ----------------------------------------------------------------------------------------------- output
def to_musicxml(score) -> str:
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    data = GeneralObjectExporter(score).parse()
    text = data.decode("utf-8") if isinstance(data, bytes) else str(data)
    # music21 fills empty metadata with its own name; a transcription has no composer
    text = text.replace("<creator type=\"composer\">Music21</creator>", "")
    text = text.replace("<creator type=\"composer\" />", "")
    return text


def render_svg_pages(musicxml: str, page_width: int = 2100, page_height: int = 2970, scale: int = 40) -> list[str]:
    import verovio

    tk = verovio.toolkit()
    tk.setOptions({"pageWidth": page_width, "pageHeight": page_height, "scale": scale,
                   "adjustPageHeight": True, "footer": "none", "header": "auto",
                   "breaks": "auto", "pageMarginLeft": 80, "pageMarginRight": 80})
    if not tk.loadData(musicxml):
        raise ScoreError("verovio could not load the MusicXML")
    return [portable_svg(tk.renderToSVG(i)) for i in range(1, tk.getPageCount() + 1)]


def portable_svg(svg: str) -> str:
    """Replace verovio's SMuFL text glyphs (the metronome-mark note, in the Leipzig font that only
    verovio has) by ordinary Unicode text, so that cairo and browsers draw them."""
    import re

    glyphs = {"\ueca5": "\u2669", "\ueca3": "\U0001D15E", "\uecb7": ".", "\ueca7": "\u266A"}

    def repl(m: "re.Match[str]") -> str:
        text = "".join(glyphs.get(c, c) for c in m.group(2))
        return f'<tspan font-family="DejaVu Sans"{m.group(1)}>{text}</tspan>'

    svg = re.sub(r'<tspan font-family="Leipzig"([^>]*)>([^<]*)</tspan>', repl, svg)
    return svg.replace('font-size="720px">\u2669', 'font-size="500px">\u2669')


def svg_to_png(svg: str, path: Path, width: int = 1600) -> None:
    import cairosvg

    cairosvg.svg2png(bytestring=svg.encode(), write_to=str(path), output_width=width, background_color="white")


def svgs_to_pdf(svgs: list[str], path: Path) -> None:
    """One PDF page per SVG page (cairo PDF surface shared across pages)."""
    import cairocffi
    import cairosvg.parser
    import cairosvg.surface

    pdf = {"surface": None}

    class _Page(cairosvg.surface.PDFSurface):
        def _create_surface(self, width, height):
            if pdf["surface"] is None:
                pdf["surface"] = cairocffi.PDFSurface(str(path), width, height)
            else:
                pdf["surface"].set_size(width, height)
            return pdf["surface"], width, height

    for svg in svgs:
        tree = cairosvg.parser.Tree(bytestring=svg.encode())
        _Page(tree, None, 96)
        pdf["surface"].show_page()
    if pdf["surface"] is not None:
        pdf["surface"].finish()

"""Score engine: from a performance (notes, pedal) to readable two-staff sheet music.

    from keyscribe.score import performance_to_score, write_score
    score = performance_to_score(perf, title="Prelude in C")
    paths = write_score(score, "out", "prelude", formats=("musicxml", "svg", "pdf", "png"))

Pipeline: metre and tempo (`beats`, learned `beatnet` or the rule-based baseline) -> hands and staves
(`hands`) -> quantisation (`quantize`) -> key and spelling (`spelling`) -> music21 and verovio
(`engrave`). Evaluation on held-out ASAP pieces: `evaluate` (`keyscribe score-eval`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from keyscribe.errors import ScoreError
from keyscribe.notes import Performance

FORMATS = ("musicxml", "svg", "pdf", "png")


@dataclass
class Score:
    """A transcribed score: the music21 stream plus what was estimated on the way."""

    stream: Any  # music21.stream.Score
    title: str
    metre: Any  # beats.Metre
    key: Any  # spelling.Key
    qnotes: list = field(default_factory=list)  # quantize.QNote per engraved note

    @property
    def time_signature(self) -> str:
        return self.metre.time_signature

    @property
    def tempo_bpm(self) -> float:
        return self.metre.tempo_bpm


def performance_to_score(perf: Performance, title: str = "", beat_method: str = "auto",
                         hands_method: str = "track", metre=None) -> Score:
    """Notation for `perf`. `metre` (a `beats.Metre`) overrides the estimated beats when given."""
    from keyscribe.score import beats, engrave, hands, quantize, spelling

    notes = list(perf.notes)
    if metre is None:
        metre = beats.estimate_metre(perf, method=beat_method)
    staff = hands.split_hands(notes, method=hands_method)
    qnotes = quantize.quantize(notes, staff, metre)
    key = spelling.estimate_key(notes)
    spelled_list = spelling.spell(notes)
    spelled = {i: spelled_list[i] for i in range(len(notes))}
    stream = engrave.build_score(qnotes, spelled, metre, key, title=title, tempo_bpm=metre.tempo_bpm)
    return Score(stream, title, metre, key, qnotes)


def write_score(score: Score, out_dir: str | Path, stem: str,
                formats: Sequence[str] = FORMATS) -> dict[str, list[Path]]:
    """Write the score as MusicXML and/or rendered SVG (one per page), PNG (one per page) and PDF."""
    from keyscribe.score import engrave

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ScoreError(f"unknown score format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    xml = engrave.to_musicxml(score.stream)
    written: dict[str, list[Path]] = {}
    if "musicxml" in formats:
        p = out / f"{stem}.musicxml"
        p.write_text(xml, encoding="utf-8")
        written["musicxml"] = [p]
    if any(f in formats for f in ("svg", "png", "pdf")):
        pages = engrave.render_svg_pages(xml)

        def page_path(i: int, ext: str) -> Path:
            return out / (f"{stem}.{ext}" if i == 0 else f"{stem}-{i + 1}.{ext}")

        if "svg" in formats:
            written["svg"] = []
            for i, svg in enumerate(pages):
                page_path(i, "svg").write_text(svg, encoding="utf-8")
                written["svg"].append(page_path(i, "svg"))
        if "png" in formats:
            written["png"] = []
            for i, svg in enumerate(pages):
                engrave.svg_to_png(svg, page_path(i, "png"))
                written["png"].append(page_path(i, "png"))
        if "pdf" in formats:
            p = out / f"{stem}.pdf"
            engrave.svgs_to_pdf(pages, p)
            written["pdf"] = [p]
    return written


def musicxml_to_pdf(musicxml: str | Path, pdf: str | Path) -> Path:
    """Engrave a MusicXML file (as `write_score` writes) to a PDF, atomically: an interrupted or failed
    engraving leaves no file at `pdf`. Raises `ScoreError` when verovio cannot read the MusicXML."""
    from keyscribe.atomic import write_atomic
    from keyscribe.score import engrave

    pages = engrave.render_svg_pages(Path(musicxml).read_text(encoding="utf-8"))
    return write_atomic(pdf, lambda tmp: engrave.svgs_to_pdf(pages, tmp))


__all__ = ["Score", "performance_to_score", "write_score", "musicxml_to_pdf", "FORMATS"]

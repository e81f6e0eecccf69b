"""The `keyscribe` command line. Each sub-command parses its arguments and calls the library.

Every `KeyscribeError` becomes one line on stderr and exit status 2; nothing else is caught, so a bug
still shows its traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from keyscribe.errors import KeyscribeError

# keyscribe.score.beats.METHODS, spelt out so that building the parser imports no numerical code
BEAT_METHODS = ("auto", "rule", "baseline", "model", "notes")

Command = Callable[[argparse.Namespace], int]


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score estimated notes against references with mir_eval")
    p.add_argument("--ref", required=True, help="folder of reference .mid/.tsv files")
    p.add_argument("--est", required=True, help="folder of estimated .mid/.tsv files, paired by stem")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.add_argument("--no-pedal-extend", action="store_true",
                   help="use the references' key releases instead of extending them by the pedal")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from keyscribe import evaluate
    result = evaluate.evaluate_folders(args.ref, args.est, pedal_extend=not args.no_pedal_extend)
    print(evaluate.format_table(result))
    if args.json:
        evaluate.write_json(_with_provenance(result, args), args.json)
    return 0


def _with_provenance(result: dict, args: argparse.Namespace) -> dict:
    """`result` with what made it: the command's options, keyscribe's version and, from a git checkout, the
    commit (`keyscribe.provenance.source_commit`)."""
    import keyscribe
    from keyscribe.provenance import source_commit
    return {**result, "provenance": {"options": {k: v for k, v in vars(args).items() if k != "run"},
                                     "version": keyscribe.__version__, "commit": source_commit()}}


def _add_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="statistics and key co-occurrence of a folder of MIDI/tsv")
    p.add_argument("data_dir")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.set_defaults(run=_run_stats)


def _run_stats(args: argparse.Namespace) -> int:
    from keyscribe import stats
    summary = stats.dataset_stats(args.data_dir, args.out)
    print(stats.format_summary(summary))
    return 0


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="engrave a performance MIDI as two-staff sheet music")
    p.add_argument("input", help="performance MIDI file (.mid)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--formats", default="musicxml,svg,pdf,png",
                   help="comma-separated: musicxml,svg,pdf,png (default: all)")
    p.add_argument("--title", help="title on the score (default: from the file name)")
    p.add_argument("--beats", choices=BEAT_METHODS, default="auto",
                   help="beat tracker: auto = notes (the learned note-sequence network), rule (rule tracker + "
                        "learned level chooser), baseline (rule tracker alone) or model (the learned frame TCN)")
    p.set_defaults(run=_run_score)


def _run_score(args: argparse.Namespace) -> int:
    from pathlib import Path

    from keyscribe.score import performance_to_score, write_score
    from keyscribe.score.io import load_performance
    src = Path(args.input)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    title = args.title or src.stem.replace("_", " ")
    score = performance_to_score(load_performance(src), title=title, beat_method=args.beats)
    written = write_score(score, args.out, src.stem, formats=formats)
    print(f"{src.name}: {score.time_signature}, key {score.key.name}, ~{score.tempo_bpm:.0f} bpm")
    for paths in written.values():
        for path in paths:
            print(path)
    return 0


def _add_score_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score-eval", help="metre/key/notation accuracy on held-out ASAP pieces")
    p.add_argument("--asap", help="ASAP folder (default: ../shared/data/asap)")
    p.add_argument("--split", default="test", choices=("test", "validation", "train"),
                   help="held-out pieces (default), the validation pieces that chose the networks' weights, or all training pieces")
    p.add_argument("--beats", choices=BEAT_METHODS, default="auto")
    p.add_argument("--max-per-piece", type=int, default=2, help="performances per piece (default 2)")
    p.add_argument("--limit", type=int, help="evaluate only the first N pieces")
    p.add_argument("--no-notation", action="store_true", help="skip the quantised-onset check")
    p.add_argument("--from-audio", metavar="PIANO",
                   help="render each performance on PIANO (e.g. salamander) and score the transcribed notes")
    p.add_argument("--audio-cache", default="work/score-eval-audio",
                   help="folder keeping the transcriptions of --from-audio (default: work/score-eval-audio)")
    p.add_argument("--json", help="write all metrics to this JSON file")
    p.set_defaults(run=_run_score_eval)


def _run_score_eval(args: argparse.Namespace) -> int:
    from keyscribe.score import evaluate as score_evaluate
    hear = score_evaluate.audio_roundtrip(args.from_audio, args.audio_cache) if args.from_audio else None
    result = score_evaluate.evaluate_asap(args.asap, split=args.split, method=args.beats,
                                          max_per_piece=args.max_per_piece, notation=not args.no_notation,
                                          limit=args.limit, hear=hear)
    print(score_evaluate.format_summary(result))
    if args.json:
        score_evaluate.write_json(_with_provenance(result, args), args.json)
    return 0


def _add_render_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render-dataset", help="render training/validation excerpts into feature shards")
    p.add_argument("--config", required=True, help="TOML file with a [dataset] table")
    p.add_argument("-o", "--out", required=True, help="dataset folder (resumes if it exists)")
    p.set_defaults(run=_run_render_dataset)


def _run_render_dataset(args: argparse.Namespace) -> int:
    import json

    from keyscribe.data.build import DatasetConfig, build_dataset
    summary = build_dataset(DatasetConfig.from_toml(args.config), args.out)
    print(json.dumps(summary, indent=2))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a transcription model on a rendered dataset")
    p.add_argument("--config", required=True, help="TOML file with [model], [train], [decode] tables")
    p.add_argument("--max-steps", type=int, help="override [train] max_steps")
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from keyscribe.train import load_configs, train
    model_config, train_config, decode_config = load_configs(args.config)
    if args.max_steps is not None:
        train_config = replace(train_config, max_steps=args.max_steps)
    state = train(model_config, train_config, decode_config)
    print(f"stopped at step {state['step']}, best validation note F1 {state['best_note_f1']:.4f}")
    return 0


def _add_evaluate_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate-model", help="transcribe labelled recordings with a model and score them")
    p.add_argument("--checkpoint", help="a training checkpoint (.pt) or an exported model (.onnx); "
                                        "default: the shipped model")
    p.add_argument("--data", default="../shared/data/maps/ENSTDkAm", help="folder of audio + .tsv labels")
    p.add_argument("--limit", type=int, help="only the first N recordings")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.set_defaults(run=_run_evaluate_model)


def _run_evaluate_model(args: argparse.Namespace) -> int:
    from keyscribe import evaluate, report
    result = report.evaluate_on_recordings(report.model_file_transcriber(args.checkpoint), args.data, limit=args.limit)
    print(evaluate.format_table(result))
    print(evaluate.format_velocity_recall(result["recall_by_velocity"]))
    print(f"{result['audio_seconds']:.0f} s of audio in {result['seconds']:.1f} s of model + decoding time")
    if args.json:
        evaluate.write_json(_with_provenance(result, args), args.json)
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from keyscribe.web.commands import add_serve, add_worker  # argparse only; Django loads on run
    add_serve(sub)
    add_worker(sub)


def _add_transcribe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe piano recordings to MIDI, note lists and sheet music")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio or video files, or folders of them")
    p.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="output folder: OUTDIR/<name>.<ext>")
    p.add_argument("--formats", default="midi,csv,json,txt,png",
                   help="comma-separated, from midi,csv,json,txt,png,musicxml,pdf,svg, or all "
                        "(default: midi,csv,json,txt,png; png is the piano roll)")
    p.add_argument("--model", help="model file: .onnx, or a training checkpoint .pt (default: the shipped model)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when there is a GPU, else the CPU (default)")
    p.add_argument("--workers", type=int, default=1, help="transcribe this many files at once, in processes")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_transcribe)


def _run_transcribe(args: argparse.Namespace) -> int:
    from keyscribe.transcribe import transcribe_files
    result = transcribe_files(args.inputs, args.out, formats=args.formats, model=args.model, device=args.device,
                              workers=args.workers, force=args.force,
                              progress=not args.quiet and sys.stderr.isatty())
    if len(result.written) == 1 and not result.failed:
        for path in result.written[0][1]:
            print(path)
    failed = f", {len(result.failed)} failed" if result.failed else ""
    print(f"keyscribe: {len(result.written)} file(s) transcribed into {args.out}{failed}", file=sys.stderr)
    return 1 if result.failed else 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="transcribe the bundled example and score it against its MIDI")
    p.add_argument("-o", "--out", default="demo-output", help="output folder (default: ./demo-output)")
    p.add_argument("--model", help="model file (default: the shipped model)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from keyscribe.transcribe import run_demo
    return run_demo(args.out, model=args.model, device=args.device)


def _add_export_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-model", help="export a training checkpoint as an ONNX model and its JSON sidecar")
    p.add_argument("checkpoint", help="checkpoint .pt (decode thresholds from config.json beside it)")
    p.add_argument("-o", "--out", required=True, help="folder, e.g. src/keyscribe/models/ to ship it")
    p.add_argument("--name", help="file name without suffix (default: the shipped model's, keyscribe-piano)")
    p.add_argument("--model-id", help="model id recorded in the sidecar (default: <name>-<date>)")
    p.add_argument("--metrics", help="JSON of metrics to record, e.g. from keyscribe evaluate-model --json")
    p.add_argument("--with-torch", action="store_true", help="also write <name>.pt weights for the torch (CUDA) runtime")
    p.set_defaults(run=_run_export_model)


def _run_export_model(args: argparse.Namespace) -> int:
    from keyscribe.inference import MODEL_NAME, export_model_files, read_info
    path = export_model_files(args.checkpoint, args.out, name=args.name or MODEL_NAME, model_id=args.model_id,
                              metrics_file=args.metrics, with_torch=args.with_torch)
    info = read_info(path)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB), {path.with_suffix('.json')}: model {info.model_id}, "
          f"decode {info.decode}, onnxruntime matches torch")
    return 0

def _add_tune_decoding(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune-decoding", help="choose decoding thresholds on the synthetic validation set")
    p.add_argument("--checkpoint", required=True, help="a training checkpoint; its run's config.json is updated")
    p.add_argument("--dataset", default="work/dataset", help="rendered dataset with a validation split")
    p.add_argument("--excerpts", type=int, default=0, help="validation excerpts to use (0: all)")
    p.set_defaults(run=_run_tune_decoding)


def _run_tune_decoding(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict
    from pathlib import Path

    from keyscribe import report
    from keyscribe.data.shards import load_split
    excerpts = load_split(args.dataset, "validation")[: args.excerpts or None]
    decode, grid = report.tune_decoding(args.checkpoint, excerpts)
    for key, score in sorted(grid.items(), key=lambda kv: -kv[1])[:5]:
        print(f"onset/frame threshold {key}: mean of note and note-with-offset F1 {score:.4f}")
    config_path = Path(args.checkpoint).parent / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config["decode"] = {**config.get("decode", {}), **asdict(decode)}
    config["decode_tuning"] = {"dataset": args.dataset, "excerpts": len(excerpts), "grid": grid}
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    print(f"chose onset {decode.onset_threshold}, frame {decode.frame_threshold}; saved in {config_path}")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="evaluate runs and the rule-based baseline; write docs/results.md")
    p.add_argument("runs", nargs="+", help="run folders (their best.pt, else latest.pt) or exported models (.onnx)")
    p.add_argument("--dataset", default="work/dataset", help="rendered dataset with a validation split")
    p.add_argument("--maps", default="../shared/data/maps/ENSTDkAm", help="real recordings with labels")
    p.add_argument("-o", "--out", default="docs/results.md")
    p.add_argument("--no-baseline", action="store_true")
    p.set_defaults(run=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from keyscribe import report
    report.build_report(args.runs, args.dataset, args.out, maps_dir=args.maps, baseline=not args.no_baseline)
    print(f"wrote {args.out}")
    return 0


COMMANDS = [_add_evaluate, _add_stats, _add_render_dataset, _add_train, _add_evaluate_model, _add_tune_decoding, _add_report, _add_score, _add_score_eval, _add_serve, _add_transcribe, _add_demo, _add_export_model]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyscribe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyscribeError as exc:
        print(f"keyscribe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("keyscribe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

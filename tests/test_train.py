"""Training on a tiny dataset that the test renders from the shared data: the real pipeline end to end."""
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from keyscribe.data.build import DatasetConfig, build_dataset, remap_velocities
from keyscribe import report
from keyscribe.audio import load_audio
from keyscribe.evaluate import VELOCITY_BANDS
from keyscribe.data.shards import label_rates, load_split, random_batch
from keyscribe.errors import KeyscribeError
from keyscribe.midi import read_midi, write_tsv
from keyscribe.notes import Note, Performance
from keyscribe.model import ModelConfig
from keyscribe.train import TrainConfig, learning_rate_at, load_configs, load_model, train, validate

CONFIG = Path(__file__).resolve().parents[1] / "src" / "keyscribe" / "configs" / "crgcn.toml"
EXAMPLES = CONFIG.parents[1] / "examples"


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, shared_dir):
    out = tmp_path_factory.mktemp("dataset")
    config = DatasetConfig(asap_dir=str(shared_dir / "asap"), maps_synth_dir=str(shared_dir / "maps" / "synth"),
                           train_hours=4 * 5 / 3600, validation_hours=2 * 5 / 3600, excerpt_s=5.0, maps_share=0.25,
                           pianos=("fluidr3-grand",), augment=False, workers=1)
    summary = build_dataset(config, out)
    assert summary["train"]["excerpts"] == 4 and summary["validation"]["excerpts"] == 2
    assert summary["train"]["failed"] == 0
    return out


def _configs(dataset, run_dir, **train_overrides):
    model, train_config, decode = load_configs(CONFIG)
    train_config = replace(train_config, datasets=(str(dataset),), run_dir=str(run_dir), batch_size=2, sequence_frames=64,
                           validate_every=2, checkpoint_every=1, threads=1, **train_overrides)
    return model, train_config, decode


def test_dataset_shards_are_aligned_and_labelled(tiny_dataset):
    excerpts = load_split(tiny_dataset, "train")
    for ex in excerpts:
        assert ex.mel.dtype == np.float16 and ex.mel.shape == (1 + 5 * 16000 // 512, 229)
        assert ex.labels.shape == (ex.mel.shape[0], 4 * 88 + 1)
        assert ex.roll("frame").any()
        # velocities only where the key sounds
        assert not (ex.roll("velocity")[ex.roll("frame") == 0]).any()
    manifest = [json.loads(line) for line in (tiny_dataset / "manifest.jsonl").read_text().splitlines()]
    assert {r["piano"] for r in manifest} >= {"fluidr3-grand"} and all("seed" in r for r in manifest)


def test_remap_velocities_scales_and_spreads_about_the_median_within_midi_range():
    perf = Performance((Note(0.0, 1.0, 60, 40), Note(0.5, 1.0, 64, 60), Note(1.0, 2.0, 67, 80), Note(1.5, 2.0, 72, 127)))
    assert [n.velocity for n in remap_velocities(perf, 0.5, 1.0).notes] == [20, 30, 40, 64]
    # median 70: 70 + 2 * (v - 70), then clipped to 1..127
    assert [n.velocity for n in remap_velocities(perf, 1.0, 2.0).notes] == [10, 50, 90, 127]
    assert [(n.onset_s, n.offset_s, n.pitch) for n in remap_velocities(perf, 0.3, 1.7).notes] == \
        [(n.onset_s, n.offset_s, n.pitch) for n in perf.notes]


def test_dynamics_change_the_rendered_velocities_and_their_labels_only(tiny_dataset, tmp_path, shared_dir):
    """The same jobs rendered at half velocity: the velocity labels halve, onsets stay, and the audio is
    rendered from the new velocities (the manifest records them)."""
    config = DatasetConfig(asap_dir=str(shared_dir / "asap"), maps_synth_dir=str(shared_dir / "maps" / "synth"),
                           train_hours=4 * 5 / 3600, validation_hours=0.0, excerpt_s=5.0, maps_share=0.25,
                           pianos=("fluidr3-grand",), augment=False, workers=1,
                           velocity_scale=(0.5, 0.5), velocity_spread=(1.0, 1.0))
    build_dataset(config, tmp_path)
    manifest = {r["id"]: r for r in map(json.loads, (tmp_path / "manifest.jsonl").read_text().splitlines())}
    before = {ex.id: ex for ex in load_split(tiny_dataset, "train")}
    compared = 0
    for ex in load_split(tmp_path, "train"):
        if manifest[ex.id]["kind"] != "midi":
            assert "dynamics" not in manifest[ex.id]  # a recording's dynamics cannot be changed
            continue
        assert manifest[ex.id]["dynamics"] == {"velocity_scale": 0.5, "velocity_spread": 1.0}
        old, new = before[ex.id], ex
        np.testing.assert_array_equal(new.roll("onset"), old.roll("onset"))
        v_old, v_new = old.roll("velocity").astype(int), new.roll("velocity").astype(int)
        on = old.roll("frame") > 0
        assert np.abs(v_new[on] - v_old[on] / 2).max() <= 0.5
        assert not np.array_equal(np.asarray(new.mel), np.asarray(old.mel))
        compared += 1
    assert compared >= 2


def test_listing_a_dataset_opens_no_files(tiny_dataset):
    """Each open memory map holds a file descriptor: a run over three datasets (6,700 excerpts) ran out of
    them when it re-read its manifests (session 6). Excerpts map their shards only while being read."""
    fds = lambda: len(os.listdir("/proc/self/fd"))
    before = fds()
    excerpts = load_split(tiny_dataset, "train") * 1000
    assert fds() == before
    mel, labels, _ = random_batch(excerpts, 8, 64, np.random.default_rng(0))
    assert mel.shape == (8, 64, 229) and labels.shape == (8, 64, 4 * 88 + 1) and fds() == before


def test_label_rates_are_the_shares_of_frames_on_and_the_mean_velocity(tiny_dataset):
    excerpts = load_split(tiny_dataset, "train")
    heads, pedal = label_rates(excerpts)
    frames = np.concatenate([np.asarray(ex.roll("frame")) for ex in excerpts]) > 0
    onsets = np.concatenate([np.asarray(ex.roll("onset")) for ex in excerpts]) > 0
    np.testing.assert_allclose(heads[2], frames.mean(0))
    np.testing.assert_allclose(heads[0], onsets.mean(0))
    assert 0 < heads[0].sum() < heads[2].sum()  # onsets are rarer than sounding frames
    struck = onsets.any(0)
    velocities = np.concatenate([np.asarray(ex.roll("velocity")) for ex in excerpts])
    key = int(np.flatnonzero(struck)[0])
    np.testing.assert_allclose(heads[3, key], velocities[onsets[:, key], key].mean() / 127)
    assert ((heads[3] > 0) & (heads[3] < 1)).all() and pedal.shape == (3,) and (0 <= pedal).all()


def test_excerpts_are_scored_with_the_estimate_s_own_pedal_as_real_recordings_are(tmp_path):
    from keyscribe.data.build import LABEL_LAYOUT
    from keyscribe.data.shards import Excerpt
    from keyscribe.features import FeatureConfig
    from keyscribe.labels import notes_to_rolls
    from keyscribe.notes import PedalInterval
    from keyscribe.train import evaluate_on_excerpts

    rate = FeatureConfig().frame_rate
    n_frames = int(3 * rate)
    held = Performance((Note(0.2, 2.5, 60, 80),), (PedalInterval(0.1, 2.5),))  # released at 0.5 s, sustained
    rolls = notes_to_rolls(held.notes, held.pedals, n_frames, rate)
    labels = np.concatenate([getattr(rolls, name) for name in LABEL_LAYOUT] + [rolls.pedal[:, None]], axis=1)
    np.save(tmp_path / "mel.npy", np.zeros((n_frames, 8), np.float16))
    np.save(tmp_path / "labels.npy", labels)
    excerpt = Excerpt("x", tmp_path / "mel.npy", tmp_path / "labels.npy", has_pedal=True)
    played = (Note(0.2, 0.5, 60, 80),)
    score = lambda pedals: evaluate_on_excerpts(lambda mel: Performance(played, pedals), [excerpt],
                                                progress=False)["mean"]["note_offset/f1"]
    assert score(held.pedals) == 1.0
    assert score(()) == 0.0


def test_two_training_steps_from_the_real_config_then_resume(tiny_dataset, tmp_path):
    model_config, train_config, decode = _configs(tiny_dataset, tmp_path / "run", max_steps=2)
    state = train(model_config, train_config, decode, progress=False)
    assert state["step"] == 2 and 0.0 <= state["best_note_f1"] <= 1.0
    assert (tmp_path / "run" / "latest.pt").exists() and (tmp_path / "run" / "best.pt").exists()
    log = (tmp_path / "run" / "log.csv").read_text()
    assert "loss/onset" in log and "validation/note/f1" in log
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))  # the same scalars, for TensorBoard
    # resuming continues from step 2 instead of starting again
    state = train(model_config, replace(train_config, max_steps=3), decode, progress=False)
    assert state["step"] == 3
    model = load_model(tmp_path / "run" / "latest.pt")
    scores = validate(model, load_split(tiny_dataset, "validation"), decode)
    assert 0.0 <= scores["frame/f1"] <= 1.0


def test_learning_rate_steps_down_then_anneals_smoothly_to_the_final_rate():
    config = TrainConfig(learning_rate=1e-3, lr_step=100, lr_gamma=0.5, anneal_from=250, anneal_steps=100, lr_final=1e-5)
    assert learning_rate_at(0, config) == 1e-3 and learning_rate_at(99, config) == 1e-3
    assert learning_rate_at(100, config) == 5e-4 and learning_rate_at(249, config) == 2.5e-4
    assert learning_rate_at(250, config) == pytest.approx(2.5e-4)  # no jump where the anneal starts
    rates = [learning_rate_at(step, config) for step in range(250, 351)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[50] == pytest.approx((2.5e-4 + 1e-5) / 2) and rates[-1] == pytest.approx(1e-5)
    assert learning_rate_at(10_000, config) == pytest.approx(1e-5)
    assert learning_rate_at(10_000, TrainConfig(learning_rate=1e-3, lr_step=5000, lr_gamma=0.9)) == pytest.approx(8.1e-4)


def test_a_resumed_run_follows_the_schedule_of_the_config_it_resumes_with(tiny_dataset, tmp_path):
    model_config, train_config, decode = _configs(tiny_dataset, tmp_path / "run", max_steps=2)
    train(model_config, train_config, decode, progress=False)
    annealed = replace(train_config, max_steps=4, anneal_from=2, anneal_steps=2, lr_final=1e-6)
    train(model_config, annealed, decode, progress=False)
    rows = [line.split(",") for line in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]]
    rates = {int(step): float(value) for step, name, value in rows if name == "lr"}
    assert rates == {1: train_config.learning_rate, 2: train_config.learning_rate,
                     3: pytest.approx(learning_rate_at(2, annealed)), 4: pytest.approx(learning_rate_at(3, annealed))}
    assert rates[3] == pytest.approx(rates[2]) and rates[4] < rates[3]  # the anneal starts where the decay was


def test_ema_weights_are_saved_as_the_model_and_resume_from_the_raw_ones(tiny_dataset, tmp_path):
    model_config, train_config, decode = _configs(tiny_dataset, tmp_path / "run", max_steps=2, ema_decay=0.5)
    train(model_config, train_config, decode, progress=False)
    before = torch.load(tmp_path / "run" / "latest.pt", weights_only=False)
    assert before["ema_updates"] == 2
    floats = [k for k, v in before["raw_model"].items() if v.is_floating_point() and "weight" in k]
    assert any(not torch.equal(before["model"][k], before["raw_model"][k]) for k in floats)
    train(model_config, replace(train_config, max_steps=3), decode, progress=False)
    after = torch.load(tmp_path / "run" / "latest.pt", weights_only=False)
    assert after["ema_updates"] == 3
    for k in floats:  # the average continued from the saved one: ema3 = 0.5 ema2 + 0.5 raw3
        torch.testing.assert_close(after["model"][k], 0.5 * before["model"][k] + 0.5 * after["raw_model"][k])
    assert load_model(tmp_path / "run" / "best.pt") is not None


def test_ddp_two_processes_two_steps(tiny_dataset, tmp_path):
    config = tmp_path / "ddp.toml"
    text = CONFIG.read_text().replace('datasets = ["work/dataset", "work/ds-clean"]', f'datasets = ["{tiny_dataset}"]')
    text = text.replace('run_dir = "runs/crgcn"', f'run_dir = "{tmp_path / "ddp"}"')
    text = re.sub(r"(?m)^batch_size = \d+", "batch_size = 2\nthreads = 1", text)
    text = re.sub(r"(?m)^sequence_frames = \d+", "sequence_frames = 64", text)
    assert "batch_size = 2" in text and "sequence_frames = 64" in text
    config.write_text(text)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
                           "-m", "keyscribe.cli", "train", "--config", str(config), "--max-steps", "2"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stopped at step 2" in proc.stdout
    payload = torch.load(tmp_path / "ddp" / "latest.pt", weights_only=False)
    assert payload["state"]["step"] == 2


def test_unknown_config_keys_are_errors_naming_file_table_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nbatch_sise = 4\n')
    with pytest.raises(KeyscribeError, match=r"bad.toml: unknown \[train\] keys: batch_sise"):
        load_configs(bad)
    bad.write_text('[dataset]\nworkers = 1\nhourz = 3\n')
    with pytest.raises(KeyscribeError, match=r"unknown \[dataset\] keys: hourz"):
        DatasetConfig.from_toml(bad)
    good = tmp_path / "good.toml"
    good.write_text('[train]\ndatasets = ["a", "b"]\n[dataset]\npianos = ["salamander"]\n')
    assert load_configs(good)[1].datasets == ("a", "b")
    assert DatasetConfig.from_toml(good).pianos == ("salamander",)


def test_the_velocity_table_marks_a_band_without_notes():
    bands = len(VELOCITY_BANDS) - 1
    found, total = [1] + [0] * (bands - 1), [4] + [0] * (bands - 1)
    row = report._velocity_table({"m": {"maps": {"recall_by_velocity": [found, total]}}}, "maps")[2]
    assert row == "| m | 0.250 | " + " | ".join(["-"] * (bands - 1)) + " |"


def test_report_scores_a_checkpoint_on_recordings_and_tunes_on_excerpts(tiny_dataset, tmp_path):
    """The report's path for real recordings: audio + tsv in a folder, a checkpoint, mir_eval scores."""
    model_config, train_config, decode = _configs(tiny_dataset, tmp_path / "run", max_steps=2)
    train(model_config, train_config, decode, progress=False)
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(EXAMPLES / "example.ogg", folder / "example.ogg")
    write_tsv(read_midi(EXAMPLES / "example.mid"), folder / "example.tsv")
    result = report.evaluate_on_recordings(report.checkpoint_transcriber(tmp_path / "run" / "best.pt"), folder)
    assert list(result["files"]) == ["example"] and result["audio_seconds"] > 10
    assert 0.0 <= result["mean"]["note/f1"] <= 1.0 and np.asarray(result["per_key"]).shape == (3, 88)
    assert np.asarray(result["per_key"])[[0, 2]].sum() == len(read_midi(EXAMPLES / "example.mid").notes)  # TP + FN
    kinds = result["error_types"]
    assert kinds["matched"] == np.asarray(result["per_key"])[0].sum() and kinds["missed"] >= kinds["mistimed"]
    table = report._error_table({"m": {"maps": result}}, "maps")
    assert len(table) == 3 and table[2].startswith(f"| m | {kinds['matched']} | {kinds['missed']} |")
    found, total = np.asarray(result["recall_by_velocity"])
    assert found.sum() == kinds["matched"] and total.sum() == kinds["matched"] + kinds["missed"]
    assert report._velocity_table({"m": {"maps": result}}, "maps")[2].startswith("| m | ")
    # scaled to one loudness, a recording and a copy 20 dB quieter reach the model alike
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    sf.write(quiet / "example.flac", load_audio(EXAMPLES / "example.ogg", sample_rate=16000) * 0.1, 16000)
    shutil.copy(folder / "example.tsv", quiet / "example.tsv")
    for level, gap in ((None, np.log(10)), (-24.0, 0.0)):
        mels = []
        for f in (folder, quiet):
            report.evaluate_on_recordings(lambda mel: mels.append(mel) or Performance(()), f, loudness_dbfs=level)
        loud = mels[0] > np.percentile(mels[0], 50)  # above the floor, where a gain is a shift of the log
        assert np.median((mels[0] - mels[1])[loud]) == pytest.approx(gap, abs=0.01)
    tuned, grid = report.tune_decoding(tmp_path / "run" / "best.pt", load_split(tiny_dataset, "validation"))
    assert f"{tuned.onset_threshold}/{tuned.frame_threshold}" in grid
    assert grid[f"{tuned.onset_threshold}/{tuned.frame_threshold}"] == max(grid.values())


def test_the_report_puts_a_run_and_an_exported_model_side_by_side(tiny_dataset, tmp_path):
    from keyscribe.inference import export_model_files

    model_config, train_config, decode = _configs(tiny_dataset, tmp_path / "run", max_steps=2)
    train(model_config, train_config, decode, progress=False)
    onnx = export_model_files(tmp_path / "run" / "best.pt", tmp_path / "models", name="shipped", model_id="shipped-s2")
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(EXAMPLES / "example.ogg", folder / "example.ogg")
    write_tsv(read_midi(EXAMPLES / "example.mid"), folder / "example.tsv")
    entries = report.build_report([tmp_path / "run", onnx], tiny_dataset, tmp_path / "results.md", maps_dir=folder,
                                  validation_excerpts=2, baseline=False)
    assert list(entries) == ["run", "shipped-s2"]
    run, exported = entries["run"], entries["shipped-s2"]
    assert exported["parameters"] == run["parameters"] and exported["steps"] == run["steps"] == 2
    assert exported["train_hours"] == pytest.approx(run["train_hours"], abs=0.005)
    rows = [line for line in (tmp_path / "results.md").read_text().splitlines() if line.startswith("| shipped-s2 |")]
    assert len(rows) == 6  # scores, error kinds and velocity bands, on the recordings and on the excerpts
    assert f"| {run['parameters']:,} | 2 | {run['train_hours']:.2f} |" in rows[0]
    assert (tmp_path / "results" / "loss_curves.png").stat().st_size > 0  # drawn from the run folder alone


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG.parent.glob("*.toml") if not p.stem.startswith("dataset")))
def test_every_training_config_loads_and_builds_its_model(name):
    from keyscribe.model import Transcriber

    model_config, train_config, _ = load_configs(CONFIG.with_name(f"{name}.toml"))
    assert model_config.variant in name and 0 < train_config.anneal_from
    assert train_config.anneal_from + train_config.anneal_steps <= train_config.max_steps  # the anneal finishes
    model = Transcriber(model_config)
    assert model(torch.zeros(1, 8, model_config.n_mels))["onset"].shape == (1, 8, 88)
    init_from = CONFIG.parents[3] / train_config.init_from
    if train_config.init_from and not train_config.init_from.startswith("work/"):  # shipped: it exists and fits
        from keyscribe.warm_start import warm_start
        assert warm_start(model, init_from)
    elif train_config.init_from:  # an earlier model (from git) or a run's export, by the command its comment gives
        text = CONFIG.with_name(f"{name}.toml").read_text()
        assert "git show" in text or "keyscribe export-model" in text


def test_a_run_warm_started_from_the_shipped_model_starts_as_it_with_frozen_batch_norms(tiny_dataset, tmp_path):
    from keyscribe.inference import default_model_path, load_model as load_runtime
    shipped = default_model_path()
    model_config = ModelConfig.from_dict(json.loads(shipped.with_suffix(".json").read_text())["model_config"])
    _, train_config, decode = _configs(tiny_dataset, tmp_path / "run", max_steps=1, learning_rate=0.0,
                                       init_from=str(shipped))
    train(replace(model_config, variant="cnn_rnn_mlp"), train_config, decode, progress=False)
    # a zero learning rate leaves the weights; batch norms left in training mode would have moved their statistics
    mel = np.random.default_rng(1).normal(-5.0, 2.0, (200, model_config.n_mels)).astype(np.float32)
    run_probs = load_runtime(tmp_path / "run" / "latest.pt").probabilities(mel)
    shipped_probs = load_runtime(shipped).probabilities(mel)
    for name in ("onset", "frame", "offset"):
        np.testing.assert_allclose(run_probs[name], shipped_probs[name], atol=1e-5)

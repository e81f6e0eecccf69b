"""Training-data engine: render performances through many pianos and augment the audio.

- `keyscribe.data.render`: `PIANOS`, `available_pianos()`, `render(perf, piano, sample_rate, seed)`
  (FluidSynth soundfont pianos and the Salamander Grand sampler of `keyscribe.data.sampler`).
- `keyscribe.data.augment`: `AugmentConfig`, `augment(audio, sample_rate, rng, config)`, label-preserving
  transforms (EQ, noise, room reverb, compression, detune, phone/low-pass, lossy codecs).

Both need the `train` extra (pyfluidsynth, pyroomacoustics) and the files `scripts/setup-system.sh`
installs; nothing here is imported by the inference path.
"""

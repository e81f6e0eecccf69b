"""keyscribe: piano recordings to notes, sustain pedal, MIDI and two-staff sheet music."""
__version__ = "0.1.0"


def __getattr__(name: str):
    # `keyscribe.transcribe(...)` without importing the engine (numpy, onnxruntime, PyAV) on `import keyscribe`.
    # The attribute is the module keyscribe.transcribe, which is callable as its function `transcribe`.
    if name in ("transcribe", "Transcription"):
        import importlib

        module = importlib.import_module("keyscribe.transcribe")
        return module if name == "transcribe" else module.Transcription
    raise AttributeError(f"module 'keyscribe' has no attribute {name!r}")

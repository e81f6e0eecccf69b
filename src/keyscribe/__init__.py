"""keyscribe: piano recordings to notes, sustain pedal, MIDI and two-staff sheet music."""
__version__ = "0.1.0"

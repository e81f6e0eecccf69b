"""Exceptions raised at keyscribe's boundaries.

Every error a user can cause (a bad file, a bad argument) is a `KeyscribeError` whose message is one
line that says what is wrong and with what; the CLI prints it and exits non-zero without a traceback.
"""


class KeyscribeError(Exception):
    """Base class of all errors a user can cause."""


class AudioError(KeyscribeError):
    """An input recording cannot be decoded, is empty, or breaks a configured limit."""


class LabelError(KeyscribeError):
    """A MIDI, tsv or notes input is missing, malformed or holds invalid notes."""


class ModelError(KeyscribeError):
    """A model file is missing, corrupt or does not match its configuration."""


class ScoreError(KeyscribeError):
    """A performance cannot be turned into notation."""

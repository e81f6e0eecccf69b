"""TOML tables -> the frozen dataclasses that configure each component."""
from __future__ import annotations

import os
from dataclasses import fields

from keyscribe.errors import KeyscribeError


def from_table(cls, values: dict, source: str | os.PathLike, table: str):
    """`cls(**values)`, where a key `cls` does not have is an error naming the file and table (a typo must
    not silently fall back to a default), and TOML arrays become tuples."""
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise KeyscribeError(f"{source}: unknown [{table}] keys: {', '.join(sorted(unknown))}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

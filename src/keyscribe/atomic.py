"""Writing a file so that readers see the old file or the whole new one, never a part."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp makes them private


def _temp_path(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(name, _FILE_MODE)
    return Path(name)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Run `write(tmp)` on a temporary file beside `path`, then rename it to `path`; on any error the
    temporary file is removed and `path` is left as it was."""
    path = Path(path)
    tmp = _temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path

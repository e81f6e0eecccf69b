"""What made a result: the git commit of the package's source, so a stale JSON can be told from a fresh one."""
from __future__ import annotations

import subprocess
from pathlib import Path


def source_commit() -> str | None:
    """The git commit of the checkout holding this package, with "+dirty" when the package's tracked files
    differ from it; None outside a git checkout (an installed wheel)."""
    package = Path(__file__).parent

    def git(*command: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(package), *command], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no", "--", "."):
        commit += "+dirty"
    return commit or None

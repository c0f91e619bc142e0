"""The project's checkout: where it is, and its git revision for provenance records."""
from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["REPO_ROOT", "git_revision", "git_dirty", "repo_relative"]

#: The repository root (the folder holding comad/, transfer/, benchmark_configs/, work_dirs/).
REPO_ROOT = Path(__file__).resolve().parents[1]


def git_dirty(cwd: str | Path | None = None) -> bool | None:
    """Whether the checkout (or ``cwd``) has uncommitted changes to tracked files; None without git."""
    try:
        out = subprocess.run(["git", "-C", str(cwd or REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, check=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.strip())


def git_revision(cwd: str | Path | None = None, mark_dirty: bool = False) -> str:
    """``git rev-parse HEAD`` of the checkout (or of ``cwd``), ``+ '-dirty'`` with ``mark_dirty`` when
    tracked files changed; ``'unknown'`` outside a checkout."""
    try:
        out = subprocess.run(["git", "-C", str(cwd or REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    rev = out.stdout.strip()
    if out.returncode != 0 or not rev:
        return "unknown"
    return rev + ("-dirty" if mark_dirty and git_dirty(cwd) else "")


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository when it lies inside it, else absolute (as records name files)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)

"""The entry points' errors: a user's mistake is one line and exit status 2, not a traceback.

Every tool's ``main`` runs under :func:`run_main`. The project's own named errors — a missing or
unreadable file, a wrong config key or option, a checkpoint of another layout, a non-finite
loss — reach the user as ``<tool>: error: <message>`` on one line (the message names the file,
key or option and what was expected; the registry's ``class `X` in module:`` prefixes are
dropped), with exit status 2. The full traceback goes to ``work_dirs/errors/<tool>.log``;
``--verbose`` (or ``COMAD_VERBOSE=1``) shows it on the console instead. Anything else (a bug)
keeps its traceback.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable, NoReturn

from .console import VERBOSE_ENV
from .io import CheckpointError, atomic_write_text
from .repo import REPO_ROOT

__all__ = ["UsageError", "USER_ERRORS", "user_message", "run_main"]


class UsageError(Exception):
    """A tool's input is wrong (an option, a path): the message says which and what was expected."""


#: The errors the project raises for a user's input (each names the file / key / option).
USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, ValueError, FileNotFoundError, NotADirectoryError,
                                                IsADirectoryError, PermissionError, KeyError, CheckpointError,
                                                FloatingPointError, ModuleNotFoundError)
_REGISTRY_PREFIX = re.compile(r"^(?:class `[^`]+` in [\w.]+: )+")


def user_message(e: BaseException) -> str:
    """The error's message on one line, without mmengine's registry prefixes."""
    text = e.args[0] if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str) else str(e)
    return " ".join(_REGISTRY_PREFIX.sub("", text).split()) or type(e).__name__


def _log_traceback(prog: str) -> Path:
    text = traceback.format_exc()
    for folder in (REPO_ROOT / "work_dirs" / "errors", Path(tempfile.gettempdir()) / "comad-errors"):
        try:
            atomic_write_text(text, folder / f"{prog}.log")
            return folder / f"{prog}.log"
        except OSError:
            continue
    return Path("(not written)")


def run_main(prog: str, main: Callable[[], int | None]) -> NoReturn:
    """Run a tool's ``main`` and exit with its status; a :data:`USER_ERRORS` error is one line on
    stderr and status 2 (its traceback in the log; ``--verbose`` / ``COMAD_VERBOSE=1``: raised)."""
    verbose = "--verbose" in sys.argv[1:] or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    try:
        rc = main()
    except USER_ERRORS as e:
        if verbose:
            raise
        log = _log_traceback(prog)
        print(f"{prog}: error: {user_message(e)} (traceback: {log}; --verbose shows it)", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.exit(int(rc or 0))

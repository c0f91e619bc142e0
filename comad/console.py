"""The console a person reads: one progress bar per stage, the warnings that matter, a summary.

By default (quiet) the full stream of mmengine / mmseg / mmdet — environment dump, config,
every logger line, layer-decay parameter groups, pycocotools' prints, third-party deprecation
warnings — goes only to the run's log file in its work dir; the console keeps

- ERROR records, warnings this project's code logs, and records it marks for the console
  (:func:`notice`, also through ``print_log``'s logger): its summaries, where the logs are;
- Python warnings raised from this project's code (third-party ones go to the log file; the
  number held back is said at the end, :func:`held_warnings`);
- one tqdm bar per stage (:func:`stage_bar`; :class:`comad.engine.progress.ComadProgressHook`
  drives it in an mmengine Runner).

``--verbose`` on the entry points, or ``COMAD_VERBOSE=1``, brings back the full stream (and no
bars). The files tools read (``scalars.json``, ``metrics.json``) are the same either way.
Everything here works with mmengine's own means: the console handler's filter and stream, and the
``warnings`` module's ``showwarning`` hook; nothing filters text.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

from .repo import REPO_ROOT

__all__ = ["VERBOSE_ENV", "CONSOLE_ATTR", "verbose", "set_verbose", "notice", "ConsoleFilter", "quiet_logger",
           "route_warnings", "held_warnings", "log_files", "prints_to_log", "stage_bar"]

VERBOSE_ENV = "COMAD_VERBOSE"
#: A LogRecord attribute: the record is meant for the console (see :func:`notice`).
CONSOLE_ATTR = "comad_console"
_held = {"warnings": 0}
_original_showwarning = None


def verbose() -> bool:
    """Whether the full stream is wanted (``COMAD_VERBOSE`` set to anything but '', '0', 'false', 'no')."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def set_verbose(on: bool) -> None:
    """Set :data:`VERBOSE_ENV` for this process and the ones it starts (torchrun children)."""
    os.environ[VERBOSE_ENV] = "1" if on else "0"


def _current_logger() -> logging.Logger:
    from mmengine.logging import MMLogger

    return MMLogger.get_current_instance()


def notice(msg: str, level: int = logging.INFO, logger: logging.Logger | None = None) -> None:
    """Log ``msg`` to the current mmengine logger (its file) and show it on the console also in quiet mode."""
    (logger or _current_logger()).log(level, msg, extra={CONSOLE_ATTR: True})


class ConsoleFilter(logging.Filter):
    """On a console handler in quiet mode: ERROR+, :func:`notice` records and warnings logged by this project's
    own code (``logger.warning`` there) pass; the warnings held back (third-party ones) are counted."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        if verbose() or record.levelno >= logging.ERROR or getattr(record, CONSOLE_ATTR, False):
            return True
        if record.levelno >= logging.WARNING and _is_ours(record.pathname):
            return True
        if record.levelno >= logging.WARNING:
            _held["warnings"] += 1
        return False


class _BarSafeStream:
    """A console stream that writes through ``tqdm.write``, so log lines do not tear a progress bar."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.stream, end="")

    def flush(self) -> None:
        self.stream.flush()


def _console_handlers(logger: logging.Logger) -> list[logging.StreamHandler]:
    return [h for h in logger.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def quiet_logger(logger: logging.Logger) -> None:
    """Quiet mode on ``logger``'s console handlers (idempotent; nothing in verbose mode); routes warnings too."""
    if verbose():
        return
    for h in _console_handlers(logger):
        if not any(isinstance(f, ConsoleFilter) for f in h.filters):
            h.addFilter(ConsoleFilter())
        if not isinstance(h.stream, _BarSafeStream):
            h.setStream(_BarSafeStream(h.stream))
    route_warnings()


def log_files(logger: logging.Logger | None = None) -> list[str]:
    """The files ``logger`` (default: mmengine's current one) writes to."""
    logger = logger or _current_logger()
    return [h.baseFilename for h in logger.handlers if isinstance(h, logging.FileHandler)]


def _is_ours(filename: str) -> bool:
    path = Path(filename).resolve()
    return REPO_ROOT in path.parents and "site-packages" not in path.parts


def _showwarning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    if verbose() or _is_ours(filename):
        return _original_showwarning(message, category, filename, lineno, file, line)
    logger = _current_logger()
    if not log_files(logger):  # no run log yet: nowhere to keep it
        return _original_showwarning(message, category, filename, lineno, file, line)
    _held["warnings"] += 1
    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    record = logger.makeRecord(logger.name, logging.WARNING, filename, lineno, text, None, None)
    for h in logger.handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)


def route_warnings() -> None:
    """Third-party Python warnings to the current run's log file in quiet mode.

    Installed on every :func:`quiet_logger` call (a ``warnings.catch_warnings`` block that was
    open when it was installed puts the previous hook back when it closes).
    """
    global _original_showwarning
    if warnings.showwarning is not _showwarning:
        _original_showwarning = warnings.showwarning
        warnings.showwarning = _showwarning


def held_warnings() -> int:
    """How many third-party warnings quiet mode sent to the log files only (this process)."""
    return _held["warnings"]


class _LogWriter:
    """A text stream whose lines become INFO records of ``logger`` (its file; the console filter holds them)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger, self._buf = logger, ""

    def write(self, text: str) -> int:
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            if line.strip():
                self.logger.info(line)
        return len(text)

    def flush(self) -> None:
        if self._buf.strip():
            self.logger.info(self._buf)
        self._buf = ""


@contextlib.contextmanager
def prints_to_log(logger: logging.Logger) -> Iterator[None]:
    """In quiet mode, what third-party code ``print``s (pycocotools) goes to ``logger``'s file, not the console."""
    if verbose():
        yield
        return
    writer = _LogWriter(logger)
    with contextlib.redirect_stdout(writer):
        try:
            yield
        finally:
            writer.flush()


def stage_bar(desc: str, total: int, initial: int = 0, unit: str = "it") -> Any:
    """One tqdm bar (stderr, ETA) for a stage, on rank 0 in quiet mode; None otherwise."""
    from tqdm import tqdm

    from .runtime import rank

    if verbose() or rank() != 0:
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                mininterval=1.0, leave=True)

"""The one schema of a task's ``metrics.json`` (ImageNet probes, ADE20K, COCO).

Every evaluation task writes ``<task_work_dir>/metrics.json`` with :func:`write_metrics` and
``tools/make_tables.py`` reads it back with :func:`read_metrics`; both go through
:func:`validate_metrics`, so a file that one side writes the other side can read.

Required keys::

    task     str   'imagenet-ft' | 'imagenet-linear' | 'imagenet-linear-cached' |
                   'imagenet-knn' | 'ade20k' | 'coco' | any other non-empty name
    metrics  dict  {name: finite number}; names without '/' (strip mmengine prefixes such as
                   'coco/'). Required per known task: see TASK_PRIMARY_METRICS.
    student  str   path of the evaluated student file
    config   str   path of the benchmark config that was run
    git_rev  str   `git rev-parse HEAD` of the project, or 'unknown'
    seed     int
    date     str   ISO 8601 time the run finished
    demo     bool  True for the small real-image demo form of a task

Optional keys: ``name`` (student name used to group seeds; default: from the student path,
see :func:`student_name`), ``units`` ('percent', the default, or 'fraction' — mmdet's
CocoMetric returns fractions; the reader then multiplies every metric by 100),
``protocol`` (dict: the settings that define the number — pooling, BatchNorm, schedule, ...),
``effective_batch`` (int), ``schema_version`` (int, 1), ``release`` (dict: ``checkpoint``, ``config``,
``sha256`` of the task's release files, :mod:`comad.release`; dense tasks and the fine-tune), and
anything else (kept, not read).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any, Mapping

from comad.io import atomic_write_json
from comad.repo import git_dirty, git_revision

__all__ = [
    "SCHEMA_VERSION",
    "REQUIRED_KEYS",
    "TASK_PRIMARY_METRICS",
    "MetricsError",
    "validate_metrics",
    "make_record",
    "write_metrics",
    "read_metrics",
    "git_revision",
    "git_dirty",
    "student_name",
    "record_name",
]

SCHEMA_VERSION = 1
METRICS_FILE = "metrics.json"

REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "task": str,
    "metrics": dict,
    "student": str,
    "config": str,
    "git_rev": str,
    "seed": int,
    "date": str,
    "demo": bool,
}

# Metrics every record of a known task must carry (more are allowed).
TASK_PRIMARY_METRICS: dict[str, tuple[str, ...]] = {
    "imagenet-ft": ("top1",),
    "imagenet-linear": ("top1",),
    "imagenet-linear-cached": ("top1",),
    "imagenet-knn": ("top1",),
    "ade20k": ("mIoU",),
    "coco": ("bbox_mAP",),
}

UNITS = ("percent", "fraction")


class MetricsError(ValueError):
    """A metrics record is malformed; the message names the file (when known) and the key."""


def _where(source: str | Path | None) -> str:
    return f"metrics file {source}" if source is not None else "metrics record"


def validate_metrics(record: Mapping[str, Any], source: str | Path | None = None) -> None:
    """Check a record against the schema; raise :class:`MetricsError` naming the bad key."""
    where = _where(source)
    if not isinstance(record, Mapping):
        raise MetricsError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key, typ in REQUIRED_KEYS.items():
        if key not in record:
            raise MetricsError(f"{where}: missing required key '{key}' (required: {', '.join(REQUIRED_KEYS)})")
        value = record[key]
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if not ok:
            raise MetricsError(f"{where}: key '{key}' must be {typ.__name__}, got {type(value).__name__} ({value!r})")
    if not record["task"]:
        raise MetricsError(f"{where}: key 'task' is empty")
    metrics = record["metrics"]
    if not metrics:
        raise MetricsError(f"{where}: key 'metrics' is empty")
    for name, value in metrics.items():
        if not isinstance(name, str) or "/" in name:
            raise MetricsError(f"{where}: metric name {name!r} must be a string without '/' (strip prefixes such as 'coco/')")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MetricsError(f"{where}: metric '{name}' must be a finite number, got {value!r}")
    for name in TASK_PRIMARY_METRICS.get(record["task"], ()):
        if name not in metrics:
            raise MetricsError(f"{where}: task '{record['task']}' must report metric '{name}' (got {sorted(metrics)})")
    units = record.get("units", "percent")
    if units not in UNITS:
        raise MetricsError(f"{where}: key 'units' must be one of {UNITS}, got {units!r}")
    for key in ("name",):
        if key in record and (not isinstance(record[key], str) or not record[key]):
            raise MetricsError(f"{where}: key '{key}' must be a non-empty string, got {record[key]!r}")
    if "protocol" in record and not isinstance(record["protocol"], dict):
        raise MetricsError(f"{where}: key 'protocol' must be a dict, got {type(record['protocol']).__name__}")
    try:
        _dt.datetime.fromisoformat(record["date"])
    except ValueError:
        raise MetricsError(f"{where}: key 'date' must be an ISO 8601 time, got {record['date']!r}") from None


def make_record(task: str, metrics: Mapping[str, float], *, student: str | Path, config: str | Path,
                seed: int, demo: bool, name: str | None = None, protocol: Mapping[str, Any] | None = None,
                units: str = "percent", **extra: Any) -> dict[str, Any]:
    """Build a schema-valid record; fills ``git_rev``, ``date`` and ``schema_version``."""
    record: dict[str, Any] = dict(extra)
    record.update(
        task=task,
        metrics={k: float(v) for k, v in metrics.items()},
        student=str(student),
        config=str(config),
        git_rev=git_revision(),
        seed=int(seed),
        date=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        demo=bool(demo),
        units=units,
        schema_version=SCHEMA_VERSION,
    )
    if name is not None:
        record["name"] = name
    if protocol is not None:
        record["protocol"] = dict(protocol)
    validate_metrics(record)
    return record


def write_metrics(record: Mapping[str, Any], work_dir: str | Path) -> Path:
    """Validate and write ``<work_dir>/metrics.json`` atomically; return its path."""
    path = Path(work_dir) / METRICS_FILE
    validate_metrics(record, path)
    atomic_write_json(dict(record), path)
    return path


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Read and validate a ``metrics.json`` (a file or its folder).

    Metric values are returned in percent (a ``units='fraction'`` record is scaled by 100).
    Raises ``FileNotFoundError`` or :class:`MetricsError` naming the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {path}: no such file")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MetricsError(f"metrics file {path}: not valid JSON (half-written?): {e}") from None
    validate_metrics(record, path)
    if record.get("units", "percent") == "fraction":
        record["metrics"] = {k: 100.0 * v for k, v in record["metrics"].items()}
        record["units"] = "percent"
    return record


def student_name(student: str | Path) -> str:
    """Name of a student from its path, used to group seeds in the tables.

    An exported student (``<run>/student/student.safetensors``) is named after its run
    folder; ``<folder>/student.pth`` after ``<folder>``; any other file after its stem
    (``deit_tiny_patch16_224.pth`` -> ``deit_tiny_patch16_224``).
    """
    p = Path(student)
    if p.stem == "student":
        folder = p.parent
        if folder.name == "student" and folder.parent.name:
            folder = folder.parent
        return folder.name or p.stem
    return p.stem


def record_name(record: Mapping[str, Any]) -> str:
    """The record's ``name`` key, else :func:`student_name` of its ``student``."""
    return str(record.get("name") or student_name(record["student"]))

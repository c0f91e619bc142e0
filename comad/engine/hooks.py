"""The run hook: training progress for schedules, provenance, export at the end, summary."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..console import log_files, notice
from ..export import LATEST_POINTER, export_student, vit_arch
from ..io import atomic_write_json
from ..repo import git_revision


class ComadRunHook(Hook):
    """Tell the distiller how far training is, record provenance, export the student at the end.

    Args:
        export: export the student when training ends (``<work_dir>/student/``).
        latest_pointer: text file updated to name the newest exported student
            (``work_dirs/LATEST_STUDENT``; used by ``tools/run_transfer.sh``), or None.
        run_info: extra provenance to record in ``<work_dir>/run_info.json`` (effective batch,
            lr, demo flag, ...).
    """

    priority = "ABOVE_NORMAL"

    def __init__(self, export: bool = True, latest_pointer: str | None = f"work_dirs/{LATEST_POINTER}",
                 run_info: dict[str, Any] | None = None) -> None:
        self.export = export
        self.latest_pointer = latest_pointer
        self.run_info = dict(run_info or {})
        self._t0 = 0.0

    @staticmethod
    def _model(runner: Any) -> Any:
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def before_run(self, runner: Any) -> None:
        self._t0 = time.time()
        if is_main_process():
            info = dict(self.run_info, git_rev=git_revision(mark_dirty=True), seed=runner.seed, config=runner.cfg.filename,
                        work_dir=runner.work_dir, experiment=runner.experiment_name, date=time.strftime("%Y-%m-%d %H:%M:%S"))
            atomic_write_json(info, Path(runner.work_dir) / "run_info.json")

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        """Record the student's architecture in the checkpoint's meta as plain data.

        Tools that rebuild the student from a checkpoint (re-export) can then read it without
        executing the config text mmengine stores (``Config.fromstring`` runs Python).
        """
        student = self._model(runner).student
        arch = vit_arch(student)
        arch["mlp_ratio"] = student.blocks[0].mlp.fc1.out_features / arch["embed_dim"]
        checkpoint.setdefault("meta", {})["student_arch"] = arch

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        self._model(runner).progress = runner.iter / max(runner.max_iters, 1)

    def after_train(self, runner: Any) -> None:
        model = self._model(runner)
        path = None
        if self.export and is_main_process():
            meta = dict(self.run_info, git_rev=git_revision(mark_dirty=True), seed=runner.seed, config=runner.cfg.filename,
                        iterations=runner.iter, teachers=list(model.teacher_names))
            path = export_student(model.student, Path(runner.work_dir) / "student", meta, latest_pointer=self.latest_pointer)
        if is_main_process():
            scalars = runner.message_hub.log_scalars
            last = {k.split("/", 1)[-1]: v.current() for k, v in scalars.items()
                    if k.startswith("train/") and ("loss" in k or k.startswith("train/gate_"))}
            lines = [
                "=" * 64,
                f"CoMAD distillation finished: {runner.iter} iterations in {time.time() - self._t0:.0f} s"
                + (" [DEMO]" if self.run_info.get("demo") else ""),
                f"  work dir : {runner.work_dir}",
                f"  log      : {', '.join(log_files(runner.logger)) or runner.log_dir}",
                f"  teachers : {', '.join(model.teacher_names)}",
                "  last     : " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(last.items())),
            ]
            if path is not None:
                lines.append(f"  student  : {path}")
                lines.append(f"  next     : tools/run_transfer.sh --student {path} ade20k coco")
            lines.append("=" * 64)
            notice("\n" + "\n".join(lines), logger=runner.logger)  # on the console also in quiet mode

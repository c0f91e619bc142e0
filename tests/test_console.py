"""The console (comad.console, comad.engine.progress): quiet by default, the full stream in the log
file, one progress bar per stage driven by the Runner, --verbose / COMAD_VERBOSE=1 brings it all back."""
from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel

from comad import console


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    monkeypatch.setitem(console._held, "warnings", 0)
    return monkeypatch


def _logger(tmp_path: Path, name: str) -> tuple[logging.Logger, io.StringIO, Path]:
    logger = logging.getLogger(f"test_console.{name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    out = io.StringIO()
    logger.addHandler(logging.StreamHandler(out))
    log = tmp_path / f"{name}.log"
    logger.addHandler(logging.FileHandler(log))
    return logger, out, log


def test_quiet_console_keeps_errors_and_notices_and_the_file_keeps_everything(tmp_path, quiet):
    logger, out, log = _logger(tmp_path, "quiet")
    console.quiet_logger(logger)
    console.quiet_logger(logger)  # idempotent
    logger.info("System environment: ...")
    mmengine_file = "/x/site-packages/mmengine/fileio/file_client.py"  # a warning logged by third-party code
    logger.handle(logger.makeRecord(logger.name, logging.WARNING, mmengine_file, 1, '"FileClient" deprecated', (), None))
    logger.warning("resume: not exact")  # logged by this project's code (this file is in the repository)
    console.notice("summary: 3 tasks", logger=logger)
    console.notice("effective batch differs", logging.WARNING, logger)
    logger.error("boom")
    assert out.getvalue().splitlines() == ["resume: not exact", "summary: 3 tasks", "effective batch differs", "boom"]
    assert log.read_text().splitlines() == ["System environment: ...", '"FileClient" deprecated', "resume: not exact",
                                            "summary: 3 tasks", "effective batch differs", "boom"]
    assert console.held_warnings() == 1
    assert console.log_files(logger) == [str(log)]


def test_verbose_brings_back_the_stream(tmp_path, quiet):
    quiet.setenv(console.VERBOSE_ENV, "1")
    logger, out, _ = _logger(tmp_path, "verbose")
    console.quiet_logger(logger)
    logger.info("every line")
    assert out.getvalue() == "every line\n" and console.verbose()
    assert console.stage_bar("x", 3) is None  # no bar: mmengine's own lines instead
    console.set_verbose(False)
    assert not console.verbose()


def test_third_party_warnings_go_to_the_log_file_ours_to_the_console(tmp_path, quiet):
    from mmengine.logging import MMLogger

    shown = []
    logger = MMLogger.get_instance("test_console_warnings", log_file=str(tmp_path / "w.log"))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        console.quiet_logger(logger)
        assert warnings.showwarning is console._showwarning
        quiet.setattr(console, "_original_showwarning", lambda message, *a: shown.append(str(message)))
        warnings.warn_explicit("deprecated soon", UserWarning, "/x/site-packages/mmseg/builder.py", 36)
        warnings.warn_explicit("bf16 is slow here", RuntimeWarning, str(Path(console.__file__)), 1)
    assert shown == ["bf16 is slow here"]  # ours: on the console (stderr, as Python shows warnings)
    assert "deprecated soon" in (tmp_path / "w.log").read_text() and "bf16" not in (tmp_path / "w.log").read_text()
    assert console.held_warnings() == 1


def test_prints_to_log(tmp_path, quiet, capsys):
    logger, out, log = _logger(tmp_path, "prints")
    console.quiet_logger(logger)
    with console.prints_to_log(logger):
        print("loading annotations into memory...")
        print("Done", end="")
    assert capsys.readouterr().out == "" and out.getvalue() == ""
    assert log.read_text().splitlines() == ["loading annotations into memory...", "Done"]


class _Toy(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x, y, mode="tensor"):
        pred = torch.stack(list(x)) * self.w
        if mode == "loss":
            return {"loss": ((pred - torch.stack(list(y))) ** 2).mean()}
        return [dict(pred=p, y=t) for p, t in zip(pred, y)]


class _Err(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results += [float((s["pred"] - s["y"]).abs()) for s in data_samples]

    def compute_metrics(self, results):
        return {"err": sum(results) / len(results)}


class _ToyData(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        return dict(x=torch.tensor(float(i)), y=torch.tensor(2.0 * i))


def _toy_cfg(tmp_path: Path, **over):
    from mmengine.config import Config
    from mmengine.registry import DATASETS, METRICS, MODELS

    import comad.engine  # noqa: F401 - registers ComadProgressHook

    MODELS.register_module(name="_Toy", module=_Toy, force=True)
    DATASETS.register_module(name="_ToyData", module=_ToyData, force=True)
    METRICS.register_module(name="_ToyErr", module=_Err, force=True)
    loader = dict(dataset=dict(type="_ToyData"), sampler=dict(type="DefaultSampler", shuffle=False), batch_size=2,
                  collate_fn=dict(type="default_collate"))
    return Config(dict(dict(model=dict(type="_Toy"), work_dir=str(tmp_path), train_dataloader=loader,
                            test_dataloader=loader, train_cfg=dict(by_epoch=False, max_iters=6), test_cfg=dict(),
                            test_evaluator=dict(type="_ToyErr"), optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01)),
                            experiment_name="toy", default_hooks=dict(logger=dict(type="LoggerHook", interval=1)),
                            default_scope=None, log_processor=dict(by_epoch=False)), **over))


def test_the_progress_hook_drives_one_bar_over_train_and_test(tmp_path, quiet, capsys):
    from comad.engine.launch import ComadRunner
    from comad.engine.progress import add_progress_hook

    cfg = _toy_cfg(tmp_path)
    assert add_progress_hook(cfg, "toy", ["err"]) == ["custom_hooks: ComadProgressHook (the console's progress bar of 'toy')"]
    runner = ComadRunner.from_cfg(cfg)
    runner.train()
    runner.test()
    cap = capsys.readouterr()
    bar = cap.err.replace("\r", "\n")
    assert "toy:   0%|          | 0/6" in bar and "loss " in bar  # training: the 6 iterations and the loss
    assert "toy (test): 100%|██████████| 10/10" in bar and "err " in bar  # then the 4 test batches, the metric
    assert "Iter(train)" not in cap.out and "System environment" not in cap.out  # mmengine's stream ...
    text = Path(console.log_files(runner.logger)[0]).read_text()
    assert "Iter(train) [6/6]" in text and "System environment" in text  # ... is in the log file


def test_the_runner_build_warns_for_bf16_autocast_on_a_cpu_without_bf16_units(tmp_path, quiet):
    from comad import cpu_bf16
    from comad.engine.launch import ComadRunner, warn_cpu_bf16

    quiet.setattr(cpu_bf16, "_warned", set())
    quiet.setattr(cpu_bf16, "cpu_flags", lambda: frozenset({"avx2", "fma"}))  # an AMD EPYC with AVX2 only
    quiet.setattr(cpu_bf16.platform, "machine", lambda: "x86_64")
    quiet.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(RuntimeWarning, match=r"test_cfg.fp16=True .*amx_bf16, avx512_bf16.*Use test_cfg.fp16=False"):
        ComadRunner.from_cfg(_toy_cfg(tmp_path, test_cfg=dict(fp16=True)))
    amp = _toy_cfg(tmp_path, optim_wrapper=dict(type="AmpOptimWrapper", dtype="bfloat16", optimizer=dict(type="SGD")))
    with pytest.warns(RuntimeWarning, match=r"optim_wrapper.type='AmpOptimWrapper' with dtype='bfloat16'"):
        assert len(warn_cpu_bf16(amp)) == 1
    assert warn_cpu_bf16(amp) == []  # once per setting and process
    assert warn_cpu_bf16(_toy_cfg(tmp_path)) == []  # fp32: nothing to say
    quiet.setattr(torch.cuda, "is_available", lambda: True)
    quiet.setattr(cpu_bf16, "_warned", set())
    assert warn_cpu_bf16(amp) == []  # on a GPU bf16 is the fast setting

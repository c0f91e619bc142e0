"""The one progress bar of an mmengine stage (training, then testing when the run tests): a Hook.

:class:`ComadProgressHook` drives :func:`comad.console.stage_bar` from the Runner's own events:
the training iterations (resumed runs start where they left off) with the smoothed loss, then
the test iterations, ending with the key test metric. :func:`add_progress_hook` puts it into a
config in quiet mode only (``--verbose`` keeps mmengine's LoggerHook lines instead).
"""
from __future__ import annotations

from typing import Any, Sequence

from mmengine.config import Config, ConfigDict
from mmengine.hooks import Hook

from ..console import stage_bar, verbose

__all__ = ["ComadProgressHook", "add_progress_hook"]


class ComadProgressHook(Hook):
    """One bar per stage: ``desc``, training iterations with ``loss``, then test iterations and ``metric_keys[0]``.

    Args:
        desc: the stage's name on the bar (default: the experiment name).
        metric_keys: test metrics to show at the end, the first one found (a key matches a
            metric name or its last ``/`` part, e.g. ``bbox_mAP`` matches ``coco/bbox_mAP``).
        loss_key: the message-hub scalar shown while training (``train/<loss_key>``, smoothed
            over the LoggerHook's window).
    """

    # after RuntimeInfoHook (VERY_HIGH) put the losses into the message hub, before ComadRunHook (ABOVE_NORMAL)
    # prints its summary in after_train
    priority = "HIGH"

    def __init__(self, desc: str | None = None, metric_keys: Sequence[str] = (), loss_key: str = "loss") -> None:
        self.desc, self.metric_keys, self.loss_key = desc, tuple(metric_keys), loss_key
        self.bar: Any = None

    def _open(self, runner: Any, total: int, initial: int = 0) -> None:
        if self.bar is None:
            self.bar = stage_bar(self.desc or runner.experiment_name, total, initial)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def before_train(self, runner: Any) -> None:  # noqa: D102 - after a resume: runner.iter is where it left off
        self._open(runner, runner.max_iters, runner.iter)

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:  # noqa: D102
        if self.bar is None:
            return
        key = f"train/{self.loss_key}"
        if key in runner.message_hub.log_scalars:
            self.bar.set_postfix_str(f"{self.loss_key} {runner.message_hub.get_scalar(key).mean(10):.4f}", refresh=False)
        self.bar.update(1)

    def after_train(self, runner: Any) -> None:  # noqa: D102 - a run that tests next keeps its bar for the test
        if getattr(runner, "_test_loop", None) is None:
            self._close()

    def before_test(self, runner: Any) -> None:  # noqa: D102
        n = len(runner.test_dataloader)
        if self.bar is None:
            self._open(runner, n)
        else:
            self.bar.total += n
            self.bar.refresh()
        if self.bar is not None:
            self.bar.set_description(f"{self.desc or runner.experiment_name} (test)")

    def after_test_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:  # noqa: D102
        if self.bar is not None:
            self.bar.update(1)

    def after_test_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:  # noqa: D102
        if self.bar is None:
            return
        found = {k.rsplit("/", 1)[-1]: v for k, v in (metrics or {}).items()}
        shown = next((f"{k} {float(found[k]):.4g}" for k in self.metric_keys if k in found), None)
        if shown is not None:
            self.bar.set_postfix_str(shown, refresh=False)
        self._close()

    def after_run(self, runner: Any) -> None:  # noqa: D102 - train() ends here too: a run that tests next goes on
        if getattr(runner, "_test_loop", None) is None:
            self._close()


def add_progress_hook(cfg: Config, desc: str, metric_keys: Sequence[str] = ()) -> list[str]:
    """Add :class:`ComadProgressHook` to ``cfg.custom_hooks`` in quiet mode (none in verbose mode); returns the changes."""
    if verbose():
        return []
    hooks = [h for h in (cfg.get("custom_hooks") or []) if h.get("type") != "ComadProgressHook"]
    hooks.append(ConfigDict(type="ComadProgressHook", desc=desc, metric_keys=list(metric_keys)))
    cfg.custom_hooks = hooks
    return [f"custom_hooks: ComadProgressHook (the console's progress bar of '{desc}')"]

"""An iteration-based loop that resumes by skipping sampler draws, not by loading batches."""
from __future__ import annotations

from mmengine.runner.loops import IterBasedTrainLoop, _InfiniteDataloaderIterator

from ..console import notice


class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` whose resume costs no data loading.

    mmengine's loop advances a resumed run by loading and dropping every batch already
    trained on (hours for a late resume on ImageNet). When the sampler can ``skip``
    (:class:`~comad.engine.samplers.ResumableInfiniteSampler`), this loop tells it how many
    draws to skip and restarts the data iterator; the batches that follow are the ones the
    uninterrupted run would have seen. Otherwise it behaves as mmengine's loop.

    A wrapper a hook put around the data iterator while resuming (``after_load_checkpoint``; e.g.
    :class:`transfer.resume.ExactResumeHook`, which restores the random states before the first
    new batch) is kept around the restarted iterator through its ``restarted(iterator)`` method.
    """

    def run(self):  # noqa: D102 - mmengine's loop with the advance replaced
        sampler = getattr(self.dataloader, "sampler", None)
        if not (self._iter > 0 and hasattr(sampler, "skip")):
            return super().run()
        sampler.skip(self._iter * self.dataloader.batch_size)
        wrapper = self.dataloader_iterator
        self.dataloader_iterator = _InfiniteDataloaderIterator(self.dataloader)
        if hasattr(wrapper, "restarted"):
            self.dataloader_iterator = wrapper.restarted(self.dataloader_iterator)
        notice(f"resume: sampler skipped the draws of {self._iter} iterations (no data loaded)")  # also when quiet
        self.runner.call_hook("before_train")
        self.runner.call_hook("before_train_epoch")
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            self.run_iter(next(self.dataloader_iterator))
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)):
                self.runner.val_loop.run()
        self.runner.call_hook("after_train_epoch")
        self.runner.call_hook("after_train")
        return self.runner.model

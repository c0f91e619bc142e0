"""Evaluation of exported students: ImageNet-1K fine-tune, linear probes, k-NN, result tables.

Modules (each imports only what it needs; nothing here imports mmcv, mmseg or mmdet):

- :mod:`comad.eval.metrics_io` — the one schema of a task's ``metrics.json`` (shared with the
  ADE20K / COCO transfer runner), atomic writer, validating reader, student naming.
- students are read by :mod:`comad.checkpoint` (``load_vit``: any file the loader reads into a
  timm ``VisionTransformer``; arch from metadata or from shapes; pos-embed resampling).
- :mod:`comad.eval.data` / :mod:`comad.eval.demo_data` — ImageNet ImageFolder layout checks;
  the real-image demo set (sklearn digits) in the same layout.
- :mod:`comad.eval.features` — pooling, feature extraction, the on-disk feature cache, the
  unchanged-backbone check.
- :mod:`comad.eval.knn`, :mod:`comad.eval.linear_probe`, :mod:`comad.eval.finetune` — the
  protocols; :mod:`comad.eval.loop` — the one resumable epoch loop of the fine-tune and the
  online probe; :mod:`comad.eval.runtime` — configs, torchrun env, RNG states, run logs.
- :mod:`comad.eval.runner` — the task layer: ``TaskRequest`` -> ``Task.run`` -> ``TaskResult``,
  and ``run_task`` / ``finish_task``, the one writer of every task's ``metrics.json``.
- :mod:`comad.eval.tasks` — ``IMAGENET_TASKS``, the ImageNet rows of the task table
  (``transfer/tasks.py`` adds the dense ones; ``tools/run_transfer.sh``, ``tools/linear_probe.py``).
- :mod:`comad.eval.tables` — ``tools/make_tables.py``.
"""

"""The ImageNet-1K protocols of the task table: fine-tune, linear probes, k-NN.

Modules (each imports only what it needs; nothing here imports mmcv, mmseg or mmdet):

- :mod:`.tasks` — ``IMAGENET_TASKS``, the ImageNet rows of the task table (:mod:`transfer.tasks`
  adds the dense ones; ``tools/run_transfer.sh``, ``tools/linear_probe.py``);
- :mod:`.finetune`, :mod:`.linear_probe`, :mod:`.knn` — the protocols; :mod:`.loop` — the one
  resumable epoch loop of the fine-tune and the online probe, its checkpoints and its run log
  (the random states it saves are :mod:`transfer.resume`'s, as the dense tasks'); :mod:`.env` —
  the task's config and its torchrun environment;
- :mod:`.data` / :mod:`.demo_data` — ImageNet ImageFolder layout checks; the real-image demo set
  (scikit-learn's digits) in the same layout; :mod:`.features` — pooling, feature extraction, the
  on-disk feature cache, the unchanged-backbone check; :mod:`.baselines` — the random-init student.

Students are read by :mod:`comad.checkpoint` (``load_vit``: any file the loader reads). The task
layer (``TaskRequest`` -> ``Task.run`` -> ``TaskResult``, ``metrics.json``, the tables) is
:mod:`transfer.runner`, :mod:`transfer.metrics_io`, :mod:`transfer.tables`.
"""

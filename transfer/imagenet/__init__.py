"""The ImageNet-1K protocols of the task table: fine-tune, linear probes, k-NN — each a config on
mmengine's Runner (``benchmark_configs/imagenet/``).

Importing the package registers what those configs name (``custom_imports``): the models
(:mod:`.models`: ``ViTClassifier``, ``LinearProbe``, ``KNNClassifier``), the datasets
(:mod:`.data`: ``ClassBalancedSubset``, ``FeatureDataset``; the images are read by
``comad.data``'s ``ComadImageFolder`` with timm transforms), the metric (:mod:`.metric`:
``TopKAccuracy``) and the optimizer constructor (:mod:`.optim`: ``TimmParamGroupsConstructor``,
``TimmLars``). Nothing here imports mmcv, mmseg or mmdet.

Modules: :mod:`.tasks` — ``IMAGENET_TASKS``, the ImageNet rows of the task table (:mod:`transfer.tasks`
adds the dense ones); :mod:`.config` — the config a run runs (checked options, data roots, the derived
schedule); :mod:`.cache` / :mod:`.features` — the cached protocols' feature caches, pooling, the
unchanged-backbone check; :mod:`.knn` — DINO's k-NN; :mod:`.protocols` — the record's protocol entries;
:mod:`.timm_release` — the fine-tuned classifier as a stock-timm release; :mod:`.demo_data` — the
real-image demo set (scikit-learn's digits) in ImageFolder layout; :mod:`.baselines` — the
random-init student. The task layer (``TaskRequest`` -> ``Task.run`` -> ``TaskResult``,
``metrics.json``, the tables) is :mod:`transfer.runner`, :mod:`transfer.metrics_io`, :mod:`transfer.tables`.
"""
from . import data, metric, models, optim  # noqa: F401 - registrations for the configs' custom_imports

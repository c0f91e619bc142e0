"""The mmengine edge of comad: registrations for configs (``custom_imports``).

Importing this package registers the distiller and its data preprocessor, the run hook, the console's
progress hook, the resumable loop and sampler,
the per-sample-seeded dataset wrapper, the optimizer wrappers that skip marked steps and
the atomic file backend, and makes mmengine's own
checkpoints load with ``weights_only=True`` (see comad.mm_compat).
"""
from mmengine.fileio import register_backend
from mmengine.registry import DATA_SAMPLERS, DATASETS, HOOKS, LOOPS, MODELS, OPTIM_WRAPPERS

from ..distiller import CoMADDistiller
from ..mm_compat import enable_safe_resume
from .fileio import AtomicLocalBackend
from .hooks import ComadRunHook
from .loops import ResumableIterBasedTrainLoop
from .optim import ComadAmpOptimWrapper, ComadOptimWrapper
from .preprocess import ComadDataPreprocessor
from .progress import ComadProgressHook
from .samplers import PerSampleSeeded, ResumableInfiniteSampler

MODELS.register_module(module=CoMADDistiller, force=True)
MODELS.register_module(module=ComadDataPreprocessor, force=True)
HOOKS.register_module(module=ComadRunHook, force=True)
HOOKS.register_module(module=ComadProgressHook, force=True)
LOOPS.register_module(module=ResumableIterBasedTrainLoop, force=True)
DATA_SAMPLERS.register_module(module=ResumableInfiniteSampler, force=True)
DATASETS.register_module(module=PerSampleSeeded, force=True)
OPTIM_WRAPPERS.register_module(module=ComadOptimWrapper, force=True)
OPTIM_WRAPPERS.register_module(module=ComadAmpOptimWrapper, force=True)
register_backend("atomic_local", AtomicLocalBackend, force=True)
enable_safe_resume()

try:  # the dataset lives in comad.data (plain torch); its registration is there too
    from ..data import registry as _data_registry  # noqa: F401
except ModuleNotFoundError as e:  # pragma: no cover - only while comad.data is absent
    if e.name not in ("comad.data", "comad.data.registry"):
        raise

__all__ = ["CoMADDistiller", "ComadRunHook", "ComadProgressHook", "ResumableIterBasedTrainLoop", "ResumableInfiniteSampler",
           "PerSampleSeeded", "AtomicLocalBackend", "ComadOptimWrapper", "ComadAmpOptimWrapper"]

"""Evidence that the method works: real pretrained teachers distilled into a ViT on Fashion-MNIST.

``make evidence`` (``experiments/evidence.sh``) runs :func:`~experiments.evidence.run.run_evidence`; see
``docs/evidence.md`` for what it measures and what it found.

- :mod:`.config`: presets, teachers, conditions and comparisons (fixed before the run);
- :mod:`.data`: Fashion-MNIST, the fixed probe subsets and the unlabelled distillation pool;
- :mod:`.teachers`: the teacher files (real, converted, random-weight controls) and the shared loader;
- :mod:`.train`: one seed's conditions in lockstep on one teacher forward per step;
- :mod:`.probe`: linear and k-NN probes with per-image correctness;
- :mod:`.stats`: mean ± std and paired bootstrap intervals;
- :mod:`.units`, :mod:`.run`, :mod:`.worker`: units of work, worker processes, resume;
- :mod:`.report`: CSV, Markdown, PNG and the summary.
"""
from .config import CONDITIONS, DIFFERENCES, PRESETS, TEACHERS, EvidenceConfig, preset
from .run import run_evidence

__all__ = ["CONDITIONS", "DIFFERENCES", "PRESETS", "TEACHERS", "EvidenceConfig", "preset", "run_evidence"]

"""Evidence that the method works: real pretrained teachers distilled into a ViT on Fashion-MNIST.

``make evidence`` (``experiments/evidence.sh``) runs :func:`~experiments.evidence.run.run_evidence`; see
``docs/evidence.md`` for what it measures and what it found.

- :mod:`.config`: presets and teachers; :mod:`.designs`: conditions and comparisons (fixed before each run);
- :mod:`.data`: Fashion-MNIST, the fixed probe subsets and the unlabelled distillation pool;
- :mod:`.teachers`: the teacher files (real, converted, random-weight controls) and the shared loader;
- :mod:`.masks`: the mask schemes; :mod:`.train`: one seed's group of conditions in lockstep;
- :mod:`.probe`: linear and k-NN probes with per-image correctness; :mod:`.dense`: the scenes and
  the per-patch probe;
- :mod:`.stats`: mean ± std and paired bootstrap intervals;
- :mod:`.units`, :mod:`.run`: units of work, a process pool, resume; :mod:`.curve`: the learning curve;
- :mod:`.report`: CSV, Markdown, PNG and the summary.
"""
from .config import PRESETS, TEACHERS, EvidenceConfig, preset
from .designs import CONDITIONS, DESIGNS, DIFFERENCES
from .run import run_evidence

__all__ = ["CONDITIONS", "DESIGNS", "DIFFERENCES", "PRESETS", "TEACHERS", "EvidenceConfig", "preset", "run_evidence"]

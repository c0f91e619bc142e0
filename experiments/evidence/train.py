"""One seed's distillations of one group in lockstep: every condition on the same batches.

A unit of work is one seed and one group of conditions (:class:`~experiments.evidence.designs.Condition`).
Its conditions are :class:`~comad.distiller.CoMADDistiller` s built from the same seed (the same
student and decoder init), sharing the frozen teacher instances
(:class:`~experiments.evidence.teachers.SharedTeachers`). Each step draws one batch (the seed's
order of the pool) and the masks of every scheme the group uses
(:func:`~experiments.evidence.masks.scheme_masks`, a function of seed and step, so units of one
seed are paired). Each distinct (teacher, scheme) pair's tokens are computed once
(:func:`comad.teachers.teacher.forward_teachers`) and every condition takes its teachers' tokens
through :meth:`~comad.distiller.CoMADDistiller.losses_from_tokens`, the method's own code path.
The state is saved every ``checkpoint_minutes`` (atomically), so a crashed unit resumes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from comad.distiller import CoMADDistiller
from comad.io import atomic_torch_save, safe_torch_load
from comad.masking import Masks
from comad.teachers.teacher import forward_teachers
from .config import TEACHERS, EvidenceConfig
from .data import FashionMNIST, to_batch
from .designs import Condition
from .masks import scheme_masks
from .teachers import SharedTeachers, spec_of

__all__ = ["Lockstep", "distiller_config", "build_lockstep", "train_step", "train_seed", "step_masks"]

#: the student's keep ratio and the teachers' nesting each mask scheme trains with (the distiller's own
#: mask options are set to match, although the masks come from experiments.evidence.masks)
_SCHEME_MASKING = {"nested": dict(nested=True), "full": dict(nested=True), "symmetric": dict(nested=True),
                   "independent": dict(nested=False), "student50": dict(nested=True, student_keep=0.5)}

Progress = Callable[[str, int, int], None]


def distiller_config(cfg: EvidenceConfig, cond: Condition, files: dict[str, Path], seed: int) -> dict[str, Any]:
    """The :class:`CoMADDistiller` arguments of one condition (the student's patch and the teachers'
    keep ratios fixed by the run; each teacher at the student's grid x its own patch size)."""
    teachers = [dict(name=key, checkpoint=str(files[key]), layer=spec_of(key).layer,
                     **({"num_heads": spec_of(key).num_heads} if spec_of(key).num_heads else {}))
                for key in cond.teachers]
    arch = dict(cfg.student, patch_size=cfg.patch_size)
    masking = {"student_keep": cfg.student_keep, **_SCHEME_MASKING[cond.masks]}
    keep = {"full": lambda k: 1.0, "symmetric": lambda k: masking["student_keep"]}.get(cond.masks, lambda k: spec_of(k).keep)
    loss = {"both": {}, "token": dict(map_weight=0.0), "map": dict(token_weight=0.0)}[cond.loss]
    extra = dict(fusion=dict(mode=cond.fusion, teacher_drop=cond.drop), standardize=cond.standardize, loss=loss)
    return dict(teachers=teachers, student=dict(arch=arch), img_size=cfg.img_size, mask_seed=seed,
                decoder=dict(depth=cfg.decoder_depth, num_heads=cfg.student["num_heads"]),
                masking=dict(masking, teacher_keep=[keep(k) for k in cond.teachers]),
                adapter=dict(align=cond.align, fit_images=cfg.fit_images), gating=dict(mode=cond.gating),
                teacher_precision="amp", compile=False, **extra)


@dataclass
class Lockstep:
    """The trained conditions of one seed and group, and what they share."""

    seed: int
    cfg: EvidenceConfig
    conditions: dict[str, Condition]  # the trained ones
    models: dict[str, CoMADDistiller]
    optims: dict[str, torch.optim.Optimizer]
    scheds: dict[str, torch.optim.lr_scheduler.LambdaLR]
    teachers: dict[str, torch.nn.Module]  # teacher key -> the shared instance
    initial_student: dict[str, Tensor]  # the random-init student of this seed


def _schedule(cfg: EvidenceConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return factor


def build_lockstep(cfg: EvidenceConfig, seed: int, files: dict[str, Path], group: str | None = None) -> Lockstep:
    """Build every trained condition of ``seed`` in ``group`` (default: the design's first group)
    with the same init; teachers loaded once, before any student, so that loading does not move
    the random stream between conditions."""
    loader = SharedTeachers()
    group = cfg.groups[0] if group is None else group
    trained = [c for c in cfg.conditions if c.teachers and c.group == group]
    if not trained:
        raise ValueError(f"evidence: group {group!r} of design {cfg.design!r} trains nothing; groups: {cfg.groups}")
    models = {}
    for cond in trained:  # load every teacher first: building a ViT draws from the global RNG
        CoMADDistiller(**distiller_config(cfg, cond, files, seed), teacher_loader=loader)
    for cond in trained:
        torch.manual_seed(seed)
        models[cond.name] = CoMADDistiller(**distiller_config(cfg, cond, files, seed),
                                           teacher_loader=loader).to(cfg.device).train()
    first = next(iter(models.values())).student.state_dict()
    for name, m in models.items():  # the pairing by seed rests on this
        if any(not torch.equal(v, m.student.state_dict()[k]) for k, v in first.items()):
            raise RuntimeError(f"evidence: condition {name} did not get the seed's student init")
    optims, scheds = {}, {}
    for name, m in models.items():
        optims[name] = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=cfg.lr,
                                         betas=cfg.betas, weight_decay=cfg.weight_decay)
        scheds[name] = torch.optim.lr_scheduler.LambdaLR(optims[name], _schedule(cfg))
    teachers = {key: t for m in models.values() for key, t in zip(m.teacher_names, m.teachers)}
    return Lockstep(seed, cfg, {c.name: c for c in trained}, models, optims, scheds, teachers,
                    {k: v.clone() for k, v in first.items()})


def step_masks(ls: Lockstep, batch: int, step: int, device: str, scheme: str = "nested") -> Masks:
    """The masks of one step under ``scheme``: student (B, n_s) and one (B, n_k) per teacher
    architecture, in :data:`~experiments.evidence.config.TEACHERS` order; a function of (seed, step) only."""
    return scheme_masks(ls.cfg, ls.seed, step, batch, [scheme], device)[scheme]


def train_step(ls: Lockstep, x: Tensor, step: int) -> dict[str, dict[str, float]]:
    """One step of every condition on the batch ``x`` (B, 3, S, S), normalised, at the student's size.

    Returns:
        condition -> its logged values (``loss_token``, ``loss_map``, ``gate_*``, ``agreement``, ...).

    Raises:
        FloatingPointError: a condition's loss is not finite (named, with the seed and step).
    """
    schemes = sorted({c.masks for c in ls.conditions.values()})
    masks = scheme_masks(ls.cfg, ls.seed, step, x.shape[0], schemes, str(x.device))
    slot = {s.name: i for i, s in enumerate(TEACHERS)}
    toks: dict[tuple[str, str], Tensor] = {}
    for scheme in schemes:  # each (teacher, scheme) pair the group uses, once
        keys = sorted({k for c in ls.conditions.values() if c.masks == scheme for k in c.teachers})
        idx = [masks[scheme].teachers[slot[spec_of(k).name]] for k in keys]
        out = forward_teachers([ls.teachers[k] for k in keys], [spec_of(k).layer for k in keys], x, idx)
        toks.update({(k, scheme): t for k, t in zip(keys, out)})
    logs = {}
    for name, m in ls.models.items():
        scheme = ls.conditions[name].masks
        ms = masks[scheme]
        own = Masks(ms.student, [ms.teachers[slot[spec_of(k).name]] for k in m.teacher_names], ms.num_positions)
        m.at_step(step, step / max(1, ls.cfg.steps))
        out = m.losses_from_tokens(x, own, [toks[(k, scheme)] for k in m.teacher_names])
        loss = sum(v for k, v in out.items() if k.startswith("loss"))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"evidence: condition {name}, seed {ls.seed}, step {step}: non-finite loss {out}")
        ls.optims[name].zero_grad(set_to_none=True)
        loss.backward()
        ls.optims[name].step()
        ls.scheds[name].step()
        logs[name] = {k: float(v.detach()) for k, v in out.items()}
    return logs


def _state(ls: Lockstep, step: int, log: list[dict[str, Any]], fingerprint: str) -> dict[str, Any]:
    return dict(step=step, fingerprint=fingerprint, log=log, models={k: m.state_dict() for k, m in ls.models.items()},
                optims={k: o.state_dict() for k, o in ls.optims.items()},
                scheds={k: s.state_dict() for k, s in ls.scheds.items()})


def _resume(ls: Lockstep, path: Path, fingerprint: str) -> tuple[int, list[dict[str, Any]]]:
    if not path.is_file():
        return 0, []
    state = safe_torch_load(path)
    if state.get("fingerprint") != fingerprint:
        return 0, []
    for k, m in ls.models.items():
        m.load_state_dict(state["models"][k])
        ls.optims[k].load_state_dict(state["optims"][k])
        ls.scheds[k].load_state_dict(state["scheds"][k])
    return int(state["step"]), list(state["log"])


def train_seed(cfg: EvidenceConfig, seed: int, files: dict[str, Path], data: FashionMNIST, unit_dir: Path,
               progress: Progress | None = None, group: str | None = None) -> tuple[Lockstep, list[dict[str, Any]]]:
    """Train every condition of ``seed`` in ``group`` (resuming from ``unit_dir/train_state.pth``);
    returns them and the log."""
    ls = build_lockstep(cfg, seed, files, group)
    fingerprint = cfg.fingerprint() + f"-seed{seed}-{group or cfg.groups[0]}"
    ckpt = unit_dir / "train_state.pth"
    start, log = _resume(ls, ckpt, fingerprint)
    order = data.order(seed, cfg.images_per_student)
    last_save = time.monotonic()
    for step in range(start, cfg.steps):
        x = to_batch(data.pool[order[step * cfg.batch_size:(step + 1) * cfg.batch_size]], cfg.img_size, cfg.device)
        log.append(dict(step=step, **{f"{c}/{k}": v for c, vals in train_step(ls, x, step).items() for k, v in vals.items()}))
        if progress is not None:
            progress("train", step + 1, cfg.steps)
        due = cfg.checkpoint_minutes > 0 and time.monotonic() - last_save >= 60 * cfg.checkpoint_minutes
        if due and step + 1 < cfg.steps:
            atomic_torch_save(_state(ls, step + 1, log, fingerprint), ckpt)
            last_save = time.monotonic()
    return ls, log

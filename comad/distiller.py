"""The CoMAD distiller: an mmengine ``BaseModel`` composing the plain-torch pieces.

images -> masks -> frozen teachers (kept tokens; each teacher gets the batch resized to its own
input size, so that a patch-14 or stride-16 teacher shares the student's token grid) ->
adapters (fitted into one shared space, comad.align) -> gating -> fused targets; images ->
student (25 % of tokens) -> decoder (full map); both -> token KL + map KL.

The step is three public parts, so that a caller can share one teacher forward across several
students (the evidence run, :mod:`experiments.evidence`): :meth:`CoMADDistiller.teacher_tokens`
(:func:`comad.teachers.teacher.forward_teachers`), :meth:`~CoMADDistiller.adapt_tokens` (the alignment's fit and the
adapters) and :meth:`~CoMADDistiller.student_losses`.

Teachers are held outside the module tree: they are not in ``state_dict`` (checkpoints hold
the student, decoder, adapters and the alignment's state only; the teachers are re-read from
their files), DDP does not see them, and ``.to()`` / ``.cuda()`` still move them (see
:meth:`_apply`).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from mmengine.model import BaseModel
from torch import Tensor, nn

from .adapters import Adapter, fit_adapters
from .align import ALIGNS, Alignment
from .cpu_bf16 import warn_if_slow_bf16
from .gating import GatingOutput, consensus_gating, gate_stats
from .losses import map_kl, token_kl
from .masking import Masks
from .models.decoder import MaskedDecoder
from .checkpoint import build_vit
from .compiled import compile_losses, compile_settings
from .distiller_options import (ADAPTER_DEFAULTS, GATING_DEFAULTS, LOSS_DEFAULTS, TEACHER_KEYS, build_mask_generator,
                                check_keys, fusion_options, section,
                                has_cls, input_stats, mask_seed_of, resolve_teacher_precision,
                                standardize_options)
from .fusion import TeacherHeads, aggregate, drop_coefficients, drop_seed_of, per_teacher_losses
from .nonfinite import check_policy, guard_losses
from .standardize import Standardizer
from .models.vit import forward_kept_tokens, gather_tokens, scatter_tokens
from .teachers.teacher import forward_teachers

__all__ = ["CoMADDistiller"]



class CoMADDistiller(BaseModel):
    """Distil several frozen teachers into a ViT student (docs/method.md §2).

    Args:
        teachers: one dict per teacher: ``name``, ``checkpoint`` (file as released, a ViT or a
            CNN), and optionally ``format`` (auto), ``encoder``, ``arch`` (e.g. ``'vit_base'``),
            ``num_heads``, ``patch_size`` (an expectation; default any), ``layer`` (ViT block or
            CNN tap, default -1), ``img_size`` (default: the student's grid x the teacher's own
            patch size or stride, e.g. 98 for DINOv2-S/14 beside a 56 px / patch-8 student; the
            grid must be the student's). CNN teachers are told the images' normalisation
            (:func:`~comad.distiller_options.input_stats` of ``data_preprocessor``).
        student: ``arch`` (timm name or dict of sizes), ``drop_path_rate``.
        decoder: ``embed_dim`` (default: student width), ``depth`` (2), ``num_heads`` (3).
        masking: ``student_keep`` (0.25), ``teacher_keep`` (one ratio per teacher),
            ``nested`` (True), ``teacher_keep_end`` (None: no schedule).
        adapter: how the teachers are mapped to the student width and into one space
            (comad.align): ``align`` (``gcca`` | ``procrustes`` | ``none``), ``whiten``
            (procrustes), ``shrinkage``, ``fit_images`` (the fit uses the first steps until this
            many images, all ranks), ``init`` (``orthogonal`` | ``pca``: the per-teacher init of
            ``align='none'``), ``trainable`` (``False``; ``True``: the loss trains the maps, which
            can collapse the targets; ``'orthogonal'``: it trains a rotation after each map, which
            cannot). Defaults: :data:`~comad.distiller_options.ADAPTER_DEFAULTS`.
        gating: ``mode``, ``combine``, ``temperature``, ``stop_gradient`` (see comad.gating).
        loss: ``token_weight``, ``map_weight``, ``token_tau``, ``map_tau``, ``map_positions``.
        fusion: how the teachers become the loss (:mod:`comad.fusion`): ``mode`` — ``'gated'``
            (default: the consensus gating fuses one target per position, which the student's
            tokens and the decoder's map regress) or ``'per-teacher'`` (each teacher its own light
            head on the student, training only; the per-teacher losses averaged, as RADIO and
            UNIC do); ``teacher_drop`` (``'per-teacher'`` only; UNIC's teacher dropping: per image
            the highest-loss teacher is kept and every other dropped with this probability; 0:
            none); ``head_hidden`` (the heads' hidden width, default the student's).
        standardize: ``False`` (default) or ``True`` / a dict of
            :data:`~comad.standardize.STANDARDIZE_DEFAULTS` keys: standardise each adapted teacher
            per channel with moving statistics before the gating or the per-teacher losses
            (:mod:`comad.standardize`, UNIC's per-teacher standardisation).
        include_cls: the teachers' CLS tokens become one more target, gated like a position
            every teacher saw, and matched by the student's CLS token in the token loss (the map
            loss stays on the patch grid). Off by default (docs/method.md §2, row 2).
        img_size: training resolution.
        mask_seed: seed of the mask stream (masks of step t depend on (mask_seed, t) only).
        nan_policy: what a non-finite loss term does on any rank (all ranks agree;
            :mod:`comad.nonfinite`): ``raise`` — stop before the update, naming the step and the
            term; ``skip`` — skip that step's update on every rank (needs comad.engine's optimizer
            wrappers, which tools/train.py sets) and stop after ``max_skipped`` of them.
        max_skipped: the most skipped steps tolerated with ``nan_policy='skip'``.
        teacher_precision: how the teachers compute: ``amp`` (fp32 weights, bf16 autocast on
            CUDA), ``bf16`` (bf16 weights, the whole forward in bf16: faster, the residual
            stream rounded to bf16) or ``fp32`` (see :class:`comad.teachers.teacher.Teacher`).
        teacher_amp: the older switch: ``False`` is ``teacher_precision='fp32'``.
        compile: ``torch.compile`` the loss computation (teachers, adapters, student, decoder,
            gating, losses: one graph, forward and backward; :mod:`comad.compiled`): ``False``
            (default), ``True``, ``'auto'`` (CUDA only) or a dict of options. Masks are drawn
            outside the graph; the steps that fit the adapters run eagerly.
        compile_options: ``torch.compile`` kwargs (``backend``, ``mode``, ``dynamic``, ``fullgraph``,
            ``options``), a separate key so that a config can set them under ``compile='auto'``.
        teacher_loader: how a teacher dict's file becomes a teacher (default
            :func:`comad.teachers.load_teacher`, same keywords); code that trains several
            distillers side by side passes one that returns a shared instance per file.
    """

    def __init__(
        self,
        teachers: list[dict[str, Any]],
        student: dict[str, Any] | None = None,
        decoder: dict[str, Any] | None = None,
        masking: dict[str, Any] | None = None,
        adapter: dict[str, Any] | None = None,
        gating: dict[str, Any] | None = None,
        loss: dict[str, Any] | None = None,
        fusion: dict[str, Any] | None = None,
        standardize: bool | dict[str, Any] = False,
        include_cls: bool = False,
        img_size: int = 224,
        mask_seed: int = 0,
        nan_policy: str = "raise",
        max_skipped: int = 10,
        teacher_precision: str = "amp",
        teacher_amp: bool | None = None,
        compile: bool | str | dict[str, Any] = False,
        compile_options: dict[str, Any] | None = None,
        data_preprocessor: dict[str, Any] | None = None,
        init_cfg: dict[str, Any] | None = None,
        teacher_loader: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        student, decoder, masking = dict(student or {}), dict(decoder or {}), dict(masking or {})
        check_keys("student", student, ["arch", "drop_path_rate"])
        check_keys("decoder", decoder, ["embed_dim", "depth", "num_heads"])
        check_keys("masking", masking, ["student_keep", "teacher_keep", "nested", "teacher_keep_end"])
        self._set_options(gating, loss, nan_policy, max_skipped)
        self.compile_auto, self.compile_cfg = compile_settings(compile, compile_options)
        self._compiled: Any = None
        teacher_precision = resolve_teacher_precision(teacher_precision, teacher_amp)
        if not teachers:
            raise ValueError("model.teachers: at least one teacher is needed")

        dim, n, patch = self._build_student(student, img_size)
        self.img_size = int(img_size)
        self.mask_generator = build_mask_generator(masking, n, teachers)
        self.mask_seed = int(mask_seed)
        self.progress = 0.0  # set by comad.engine.ComadRunHook (0 -> 1 over training)

        self.teacher_precision = teacher_precision
        self._load_teachers(teachers, img_size // patch, teacher_precision, n, input_stats(self.data_preprocessor),
                            teacher_loader)
        self.include_cls = self._check_include_cls(include_cls)
        self.decoder = MaskedDecoder(dim, n, embed_dim=decoder.get("embed_dim", dim), depth=decoder.get("depth", 2),
                                     num_heads=decoder.get("num_heads", 3), out_dim=dim)
        self._build_adapters(dict(adapter or {}), dim)
        self._build_fusion(dict(fusion or {}), standardize, dim)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # drives the mask stream
        self._host_step = 0  # host mirror of ``step`` (reading a CUDA buffer would sync every step)
        # run-wide counters (all ranks), saved in checkpoints so a resumed run keeps counting
        self.register_buffer("skipped_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("corrupt_skipped", torch.zeros((), dtype=torch.long))
        self._batch_corrupt = 0

    # ------------------------------------------------------------------ construction
    def _build_student(self, student: dict[str, Any], img_size: int) -> tuple[int, int, int]:
        """The student ViT; returns its width, patch count and patch size."""
        self.student = build_vit(student.get("arch", "vit_tiny_patch16_224"), img_size=img_size,
                                 drop_path_rate=student.get("drop_path_rate", 0.0), what="model.student.arch")
        patch = int(self.student.patch_embed.patch_size[0])
        if img_size % patch:  # timm would silently crop the image to a multiple of the patch size
            raise ValueError(f"model.img_size {img_size} is not a multiple of the student's patch size {patch} "
                             f"(model.student.arch)")
        return self.student.embed_dim, int(self.student.patch_embed.num_patches), patch

    def _check_include_cls(self, include_cls: bool) -> bool:
        """``model.include_cls``: True needs a CLS token in the student and every teacher."""
        if include_cls:
            lacking = [nm for nm, t in zip(self.teacher_names, self._teachers) if not has_cls(getattr(t, "vit", None))]
            lacking += ["the student"] if not has_cls(self.student) else []
            if lacking:
                raise ValueError(f"model.include_cls=True needs a CLS token; {', '.join(lacking)} has none")
        return bool(include_cls)

    def _set_options(self, gating: dict[str, Any] | None, loss: dict[str, Any] | None, nan_policy: str,
                     max_skipped: int) -> None:
        self.gating_cfg, self.loss_cfg = section("gating", gating, GATING_DEFAULTS), section("loss", loss, LOSS_DEFAULTS)
        check_policy(nan_policy, max_skipped)
        self.nan_policy, self.max_skipped = nan_policy, max_skipped

    def _load_teachers(self, teachers: list[dict[str, Any]], grid: int, precision: str, n: int,
                       stats: tuple[tuple[float, ...], tuple[float, ...]],
                       loader: Callable[..., nn.Module] | None) -> None:
        """Load the frozen teachers (outside the module tree), each at the student's ``grid`` x its
        own patch size (or at its ``img_size``), and check they share the student's grid."""
        from .teachers import load_teacher  # the teachers package reads checkpoints

        loaded, self.teacher_names, self.teacher_layers = [], [], []
        for i, t in enumerate(teachers):
            t = dict(t)
            check_keys(f"teachers[{i}]", t, TEACHER_KEYS)
            if "checkpoint" not in t:
                raise ValueError(f"model.teachers[{i}]: 'checkpoint' (the teacher file) is required")
            name = t.get("name", f"teacher{i}")
            kw = {k: t[k] for k in ("encoder", "arch", "num_heads", "img_size") if k in t}
            teacher = (loader or load_teacher)(t["checkpoint"], format=t.get("format", "auto"), grid=grid,
                                               patch_size=t.get("patch_size"), precision=precision,
                                               input_mean=stats[0], input_std=stats[1], **kw)
            if teacher.num_positions != n:
                raise ValueError(
                    f"teacher {name} ({t['checkpoint']}): {teacher.num_positions} patches per {teacher.img_size}px "
                    f"image, the student has {n} ({grid}x{grid}); teachers and student must share the token grid"
                )
            loaded.append(teacher)
            self.teacher_names.append(name)
            self.teacher_layers.append(int(t.get("layer", -1)))
        object.__setattr__(self, "_teachers", loaded)  # not a submodule: see the module docstring

    def _build_adapters(self, cfg: dict[str, Any], dim: int) -> None:
        """The per-teacher adapters and, unless ``align='none'``, the :class:`~comad.align.Alignment`
        that fits them into one space (``align='none'`` keeps the earlier module tree, so its
        checkpoints load)."""
        check_keys("adapter", cfg, list(ADAPTER_DEFAULTS))
        cfg = {**ADAPTER_DEFAULTS, **cfg}
        if cfg["align"] not in ALIGNS:
            raise ValueError(f"model.adapter.align must be one of {ALIGNS}, got {cfg['align']!r}")
        aligned = cfg["align"] != "none"
        if aligned and cfg["init"] != "orthogonal":
            raise ValueError(f"model.adapter.init={cfg['init']!r} is the per-teacher init of align='none'; "
                             f"align={cfg['align']!r} fits its own maps (set align='none' to use it)")
        self.adapters = nn.ModuleList(
            Adapter(t.embed_dim, dim, init=cfg["init"], trainable=cfg["trainable"], seed=1000 + i, bias=aligned)
            for i, t in enumerate(self._teachers)
        )
        self.alignment = (Alignment([t.embed_dim for t in self._teachers], dim, cfg["align"], whiten=cfg["whiten"],
                                    shrinkage=cfg["shrinkage"], fit_images=cfg["fit_images"]) if aligned else None)

    def _build_fusion(self, fusion: dict[str, Any], standardize: bool | dict[str, Any], dim: int) -> None:
        """``model.fusion`` (the per-teacher heads) and ``model.standardize`` (the moving statistics)."""
        self.fusion_cfg = fusion_options(fusion)
        k = len(self._teachers)
        per_teacher = self.fusion_cfg["mode"] == "per-teacher"
        self.heads = TeacherHeads(k, dim, self.fusion_cfg["head_hidden"]) if per_teacher else None
        std = standardize_options(standardize)
        self.standardizer = Standardizer(k, dim, prefix=int(self.include_cls), **std) if std is not None else None

    def at_step(self, step: int, progress: float) -> None:
        """Set the step (which draws the masks and the teacher dropping) and the training progress
        (0 -> 1: schedules), for code that drives :meth:`losses_from_tokens` itself."""
        self.step.fill_(int(step))
        self._host_step = int(step)
        self.progress = float(progress)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._host_step = int(self.step)

    @property
    def teachers(self) -> list[nn.Module]:
        return self._teachers

    def _apply(self, fn: Any, recurse: bool = True) -> "CoMADDistiller":
        super()._apply(fn, recurse)
        for t in self._teachers:
            t._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> "CoMADDistiller":
        super().train(mode)
        for t in self._teachers:
            t.eval()
        return self

    # ------------------------------------------------------------------ masks
    def make_masks(self, batch_size: int, device: torch.device, step: int | None = None) -> Masks:
        """Masks of this rank's rows of the global batch drawn for ``step``.

        The masks of a step are drawn for the whole global batch from (mask_seed, step) and
        rank r takes rows r, r + W, ... — the rows mmengine's samplers give it — so a run on W
        processes draws the same mask for the same image as a run on one.
        """
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        rank = dist.get_rank() if world > 1 else 0
        step = self._host_step if step is None else step
        g = torch.Generator(device="cpu").manual_seed(mask_seed_of(self.mask_seed, step))
        m = self.mask_generator(batch_size * world, generator=g, device="cpu", progress=self.progress,
                                rows=slice(rank, None, world))
        return m.to(device, non_blocking=True)

    # ------------------------------------------------------------------ forward
    def teacher_tokens(self, images: Tensor, masks: Masks) -> list[Tensor]:
        """Each teacher's tokens at its kept positions: K of (B, [P +] n_k, C_k) (:func:`~comad.teachers.teacher.forward_teachers`;
        ``P`` is 1 with ``include_cls``). Teachers never keep autograd state."""
        if self.teacher_precision == "bf16" and not images.is_cuda:
            warn_if_slow_bf16("model.teacher_precision='bf16'", "model.teacher_precision='amp'")
        return forward_teachers(self._teachers, self.teacher_layers, images, masks.teachers, self.include_cls)

    def adapt_tokens(self, toks: Sequence[Tensor], masks: Masks) -> tuple[Tensor, Tensor]:
        """Teacher tokens (as :meth:`teacher_tokens` gives them) -> adapted maps (K, B, P + N, D) and
        where each teacher saw them (K, B, P + N). On the steps that fit the adapters
        (:meth:`fit_pending`) the fit runs first. Adapters keep autograd state only when
        ``adapter.trainable``."""
        n, p = masks.num_positions, int(self.include_cls)
        seen = masks.teacher_masks()  # (K, B, N)
        if self.fit_pending():
            fit_adapters(self.adapters, self.alignment, [t[:, t.shape[1] - idx.shape[1]:] for t, idx in
                                                         zip(toks, masks.teachers)], masks, seen, self._host_step)
        maps = []
        for adapter, tok, idx in zip(self.adapters, toks, masks.teachers):
            with torch.set_grad_enabled(torch.is_grad_enabled() and adapter.trainable):
                a = adapter(tok)  # (B, [P_k +] n_k, D)
            m = scatter_tokens(a[:, a.shape[1] - idx.shape[1]:], idx, n)
            maps.append(torch.cat([a[:, :1], m], 1) if p else m)
        if p:
            seen = torch.cat([seen.new_ones(seen.shape[0], seen.shape[1], 1), seen], 2)
        return torch.stack(maps), seen

    def teacher_targets(self, images: Tensor, masks: Masks) -> tuple[Tensor, Tensor]:
        """Adapted teacher tokens on each teacher's kept positions: (K, B, P + N, D) maps + seen (K, B, P + N)
        (:meth:`teacher_tokens` then :meth:`adapt_tokens`)."""
        return self.adapt_tokens(self.teacher_tokens(images, masks), masks)

    def fit_pending(self) -> bool:
        """Whether this step fits adapters (the alignment's first ``fit_images`` images, a PCA init);
        host-side state only, no device sync."""
        return (self.alignment is not None and self.alignment.pending) or any(a.needs_pca for a in self.adapters)

    def compute_losses(self, images: Tensor, masks: Masks) -> dict[str, Tensor]:
        """Named losses and gating statistics for one batch with the given masks.

        Runs the ``torch.compile``d graph when ``model.compile`` is set (built on first use),
        except for the steps that fit the adapters (:meth:`fit_pending`), which run eagerly.
        """
        args = (images, masks.student, tuple(masks.teachers), masks.num_positions)
        if self.compile_cfg is None or (self.compile_auto and not images.is_cuda) or self.fit_pending():
            return self._losses(*args)
        if self._compiled is None:
            self._compiled = compile_losses(self._losses, self.compile_cfg, images.device)
        return self._compiled(*args)

    def _losses(self, images: Tensor, student_idx: Tensor, teacher_idx: tuple[Tensor, ...],
                num_positions: int) -> dict[str, Tensor]:
        masks = Masks(student_idx, list(teacher_idx), num_positions)
        return self.losses_from_tokens(images, masks, self.teacher_tokens(images, masks))

    def losses_from_tokens(self, images: Tensor, masks: Masks, toks: Sequence[Tensor]) -> dict[str, Tensor]:
        """The step's losses given the teachers' tokens (:meth:`teacher_tokens`, or the same call
        shared across students): :meth:`adapt_tokens` then :meth:`student_losses`."""
        t_maps, seen = self.adapt_tokens(toks, masks)
        return self.student_losses(images, masks, t_maps, seen)

    def student_forward(self, images: Tensor, masks: Masks) -> tuple[Tensor, Tensor, Tensor]:
        """The student on its kept tokens and the decoder over the grid.

        Returns:
            h: (B, [P +] n_s, D) the student's tokens ([its CLS] and the kept patches);
            recon: (B, N, D) the decoder's map;
            pred: (B, [P +] N, D) what the gating compares with the teachers: [the CLS,] the
            student's own token where it saw p and the decoder's elsewhere.
        """
        p = int(self.include_cls)
        h = forward_kept_tokens(self.student, images, masks.student, return_prefix=bool(p))[0]  # (B, [P_s +] n_s, D)
        h = torch.cat([h[:, :p], h[:, h.shape[1] - masks.student.shape[1]:]], 1)
        recon = self.decoder(h[:, p:], masks.student)  # (B, N, D)
        s_mask = masks.student_mask().unsqueeze(-1)
        pred = torch.where(s_mask, scatter_tokens(h[:, p:], masks.student, masks.num_positions), recon)
        return h, recon, torch.cat([h[:, :p], pred], 1)

    def gate(self, images: Tensor, masks: Masks, t_maps: Tensor, seen: Tensor) -> GatingOutput:
        """The consensus gating of one batch (what a training step fuses its targets with), for the
        gating maps (:mod:`comad.gating_maps`): ``t_maps`` / ``seen`` as :meth:`teacher_targets` gives them
        (standardised with the stored statistics when ``model.standardize`` is on)."""
        if self.heads is not None:
            raise ValueError("model.fusion.mode='per-teacher' has no consensus gating to draw (each teacher has its "
                             "own head and loss)")
        if self.standardizer is not None:
            t_maps = self.standardizer(t_maps, seen, update=False)
        return consensus_gating(self.student_forward(images, masks)[2], t_maps, seen, **self.gating_cfg)

    def student_losses(self, images: Tensor, masks: Masks, t_maps: Tensor, seen: Tensor) -> dict[str, Tensor]:
        """The student's side of the step: student and decoder forward, gating, losses and gate
        statistics against the adapted teacher maps ``t_maps`` (K, B, P + N, D) seen at ``seen``
        (K, B, P + N), as :meth:`teacher_targets` gives them."""
        p = int(self.include_cls)
        if self.standardizer is not None:
            t_maps = self.standardizer(t_maps, seen, self.progress, update=self.training)
        h, recon, pred = self.student_forward(images, masks)
        if self.heads is not None:
            return self._per_teacher_losses(h, recon, masks, t_maps, seen)
        g = consensus_gating(pred, t_maps, seen, **self.gating_cfg)
        target, has_target = g.target[:, p:], g.has_target[:, p:]
        lc = self.loss_cfg
        out: dict[str, Tensor] = {}
        if lc["token_weight"]:  # student tokens (and the CLS) against the targets where a teacher saw them
            y_tok = torch.cat([g.target[:, :p], gather_tokens(target, masks.student)], 1)
            valid = torch.cat([g.has_target[:, :p], has_target.gather(1, masks.student)], 1)
            out["loss_token"] = lc["token_weight"] * token_kl(y_tok, h, tau=lc["token_tau"], valid=valid)
        if lc["map_weight"]:
            out["loss_map"] = lc["map_weight"] * map_kl(target, recon, has_target, tau=lc["map_tau"],
                                                       positions=lc["map_positions"])
        if not out:
            raise ValueError("model.loss: token_weight and map_weight are both 0; nothing to train")
        out.update(gate_stats(self.teacher_names, g, seen, skip=p))
        return out

    def _per_teacher_losses(self, h: Tensor, recon: Tensor, masks: Masks, t_maps: Tensor,
                            seen: Tensor) -> dict[str, Tensor]:
        """``fusion.mode='per-teacher'`` (:func:`comad.fusion.per_teacher_losses`), with teacher dropping
        while training when ``fusion.teacher_drop`` > 0. Logs ``keep_<teacher>`` (the share of
        images that kept it) and ``err_<teacher>`` (its mean loss)."""
        tok, mp = per_teacher_losses(self.heads, h, recon, masks.student, t_maps, seen, self.loss_cfg,
                                     int(self.include_cls))
        total = (tok + mp).detach()
        c = torch.ones_like(total)
        if self.fusion_cfg["teacher_drop"] > 0 and self.training:
            world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
            c = drop_coefficients(total, self.fusion_cfg["teacher_drop"], drop_seed_of(self.mask_seed, self._host_step),
                                  world, dist.get_rank() if world > 1 else 0)
        out = {k: aggregate(v, c) for k, v, w in (("loss_token", tok, "token_weight"), ("loss_map", mp, "map_weight"))
               if self.loss_cfg[w]}
        for k, name in enumerate(self.teacher_names):
            out[f"keep_{name}"], out[f"err_{name}"] = c[k].mean(), total[k].mean()
        return out

    def forward(self, inputs: Tensor, data_samples: Any = None, mode: str = "loss", **kwargs: Any) -> Any:
        if not inputs.is_floating_point():
            raise ValueError(
                f"CoMADDistiller: the images reached the model as {inputs.dtype}, not normalised floats; with a "
                "uint8 transform (transform=dict(..., normalize=False)) set "
                "model.data_preprocessor=dict(type='ComadDataPreprocessor'), which normalises them on the device"
            )
        if mode == "loss":
            bad = kwargs.get("corrupt_skipped")  # corrupt files the dataset skipped for this batch
            self._batch_corrupt = int(bad.sum()) if isinstance(bad, Tensor) else int(sum(bad or ()))
            masks = self.make_masks(inputs.shape[0], inputs.device)
            out = self.compute_losses(inputs, masks)
            self.step += 1
            self._host_step += 1
            return out
        if mode == "tensor":
            return forward_kept_tokens(self.student, inputs)[0]
        raise ValueError(f"CoMADDistiller.forward: mode must be 'loss' or 'tensor', got {mode!r}")

    def parse_losses(self, losses: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """mmengine's sum of the ``loss*`` terms, refusing non-finite values (naming the term);
        every rank agrees (:func:`comad.nonfinite.guard_losses`, ``nan_policy``)."""
        return guard_losses(self, losses, super().parse_losses)

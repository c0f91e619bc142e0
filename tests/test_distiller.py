"""The distiller end to end on tiny teachers written in the official layouts."""
from pathlib import Path

import pytest
import torch

from comad.distiller import CoMADDistiller
from comad.teachers.synthetic import write_checkpoint

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "benchmark_configs" / "distill").glob("*.py"))
TINY_STUDENT = dict(arch=dict(embed_dim=32, depth=2, num_heads=2))
LAYOUT_OF = {"mae": "mae", "ibot": "ibot", "mocov3": "mocov3"}


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("teachers")
    files = {}
    for i, (name, fmt, fname) in enumerate([("mae", "mae", "mae.pth"), ("ibot", "ibot", "checkpoint.pth"),
                                             ("mocov3", "mocov3", "vit-b-300ep.pth.tar")]):
        write_checkpoint(fmt, d / fname, embed_dim=64, depth=2, img_size=64, seed=i)
        files[name] = str(d / fname)
    return files


def make(teacher_files, **kw):
    teachers = [dict(name=n, checkpoint=p) for n, p in teacher_files.items()]
    args = dict(teachers=teachers, student=TINY_STUDENT, decoder=dict(depth=1, num_heads=2), img_size=64)
    args.update(kw)
    return CoMADDistiller(**args)


def test_losses_and_gate_stats(teacher_files):
    m = make(teacher_files)
    out = m(torch.randn(2, 3, 64, 64), mode="loss")
    assert {"loss_token", "loss_map", "gate_mae", "gate_ibot", "gate_mocov3", "agreement", "affinity"} <= set(out)
    assert all(torch.isfinite(v) for v in out.values())
    assert int(m.step) == 1


def test_state_dict_has_no_teachers_and_trainables_are_student_and_decoder(teacher_files):
    m = make(teacher_files)
    keys = m.state_dict().keys()
    assert not any(k.startswith(("teachers", "_teachers")) for k in keys)
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"student", "decoder"}  # adapters frozen by default, teachers not even parameters
    assert all(not p.requires_grad for t in m.teachers for p in t.parameters())


def test_optimisation_lowers_the_loss_on_a_fixed_batch(teacher_files):
    torch.manual_seed(0)
    m = make(teacher_files)
    x = torch.randn(4, 3, 64, 64)
    masks = m.make_masks(4, x.device, step=0)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(15):
        out = m.compute_losses(x, masks)
        loss = out["loss_token"] + out["loss_map"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_masks_depend_on_seed_and_step_only(teacher_files):
    m = make(teacher_files)
    a, b, c = m.make_masks(3, torch.device("cpu"), 5), m.make_masks(3, torch.device("cpu"), 5), m.make_masks(3, torch.device("cpu"), 6)
    assert torch.equal(a.student, b.student) and not torch.equal(a.student, c.student)
    assert a.student.shape == (3, 4) and [t.shape[1] for t in a.teachers] == [8, 10, 13]  # of 16 patches


def test_teachers_are_frozen_and_stay_in_eval(teacher_files):
    m = make(teacher_files)
    m.train()
    assert all(not t.training and not t.vit.training for t in m.teachers)
    before = [p.clone() for p in m.teachers[0].parameters()]
    out = m(torch.randn(2, 3, 64, 64))
    (out["loss_token"] + out["loss_map"]).backward()
    assert all(p.grad is None for t in m.teachers for p in t.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, m.teachers[0].parameters()))


def test_trainable_and_pca_adapters(teacher_files):
    m = make(teacher_files, adapter=dict(trainable=True, init="pca", align="none"))
    assert all(a.needs_pca for a in m.adapters)
    out = m(torch.randn(2, 3, 64, 64))
    assert not any(a.needs_pca for a in m.adapters)
    (out["loss_token"] + out["loss_map"]).backward()
    assert all(a.proj.weight.grad is not None for a in m.adapters)


def test_nonfinite_loss_is_refused_with_term_and_step(teacher_files):
    m = make(teacher_files)
    with pytest.raises(FloatingPointError, match=r"step 0: loss_map = nan"):
        m.parse_losses({"loss_token": torch.tensor(1.0), "loss_map": torch.tensor(float("nan"))})


def _grads(m):
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("adapter", [dict(align="none"), dict(init="pca", trainable=True, align="none"),
                                     dict(align="gcca", fit_images=3), dict(align="procrustes", fit_images=6)],
                         ids=["orthogonal", "pca-trainable", "gcca", "procrustes-2-steps"])
def test_compiled_losses_and_grads_equal_eager(teacher_files, adapter):
    """``model.compile``: one graph (fullgraph=True), the same losses and gradients as eager; the
    steps that fit the adapters (PCA init, alignment) run eagerly, later steps compiled."""
    torch.manual_seed(0)
    eager = make(teacher_files, adapter=adapter)
    torch.manual_seed(0)
    comp = make(teacher_files, adapter=adapter, compile=dict(backend="aot_eager", fullgraph=True))
    x = torch.randn(3, 3, 64, 64)
    for step in range(3):
        masks = eager.make_masks(3, x.device, step=step)
        oe, oc = eager.compute_losses(x, masks), comp.compute_losses(x, masks)
        fit_steps = 2 if "fit_images" in adapter and adapter["fit_images"] > 3 else int(adapter.get("init") == "pca"
                                                                                         or "fit_images" in adapter)
        assert (comp._compiled is None) == (step < fit_steps)
        assert oe.keys() == oc.keys()
        for k in oe:
            torch.testing.assert_close(oc[k], oe[k], rtol=1e-6, atol=1e-7)
        (oe["loss_token"] + oe["loss_map"]).backward()
        (oc["loss_token"] + oc["loss_map"]).backward()
        ge, gc = _grads(eager), _grads(comp)
        assert ge.keys() == gc.keys() and len(ge) > 10
        for k in ge:
            torch.testing.assert_close(gc[k], ge[k], rtol=1e-5, atol=1e-7)
        eager.zero_grad(set_to_none=True)
        comp.zero_grad(set_to_none=True)


def test_compiled_with_inductor_on_the_cpu(teacher_files):
    """The default backend (inductor; on the CPU it builds C++ kernels) agrees with eager (after the
    alignment's fit, which runs eagerly on the first step)."""
    torch.manual_seed(0)
    eager = make(teacher_files, adapter=dict(fit_images=2))
    torch.manual_seed(0)
    comp = make(teacher_files, adapter=dict(fit_images=2), compile=True)
    x = torch.randn(2, 3, 64, 64)
    masks = eager.make_masks(2, x.device, step=0)
    eager.compute_losses(x, masks), comp.compute_losses(x, masks)
    assert comp._compiled is None and not comp.fit_pending()
    masks = eager.make_masks(2, x.device, step=1)
    oe, oc = eager.compute_losses(x, masks), comp.compute_losses(x, masks)
    assert comp._compiled is not None
    for k in oe:
        torch.testing.assert_close(oc[k], oe[k], rtol=1e-4, atol=1e-5)
    (oe["loss_token"] + oe["loss_map"]).backward()
    (oc["loss_token"] + oc["loss_map"]).backward()
    ge, gc = _grads(eager), _grads(comp)
    for k in ge:
        torch.testing.assert_close(gc[k], ge[k], rtol=1e-3, atol=1e-5)


def test_compile_auto_stays_eager_off_cuda_and_a_failed_compile_is_named(teacher_files):
    m = make(teacher_files, compile="auto")
    out = m(torch.randn(2, 3, 64, 64))
    assert m._compiled is None and all(torch.isfinite(v) for v in out.values())  # CPU images: eager

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    assert make(teacher_files, compile="auto", compile_options=dict(mode="max-autotune")).compile_cfg == dict(mode="max-autotune")
    assert make(teacher_files, compile=False, compile_options=dict(mode="max-autotune")).compile_cfg is None
    m = make(teacher_files, compile=True, compile_options=dict(backend=broken_backend), adapter=dict(fit_images=2))
    m(torch.randn(2, 3, 64, 64))  # the alignment's fit: eager
    with pytest.raises(RuntimeError, match=r"model.compile: torch.compile failed on cpu .*set model.compile=False"):
        m(torch.randn(2, 3, 64, 64))


def test_uint8_images_without_the_preprocessor_are_refused(teacher_files):
    m = make(teacher_files)
    with pytest.raises(ValueError, match=r"torch.uint8, not normalised floats; .*type='ComadDataPreprocessor'"):
        m(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    from comad.engine.preprocess import ComadDataPreprocessor

    m = make(teacher_files, data_preprocessor=ComadDataPreprocessor())
    batch = m.data_preprocessor(dict(inputs=torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)), True)
    out = m(**batch, mode="loss")
    assert all(torch.isfinite(v) for v in out.values())


def test_teacher_precision_option(teacher_files):
    m = make(teacher_files, teacher_precision="bf16")
    assert all(t.precision == "bf16" for t in m.teachers)
    assert not any(k.startswith("_teachers") for k in m.state_dict())
    out = m(torch.randn(2, 3, 64, 64))
    assert all(torch.isfinite(v) for v in out.values())
    assert all(t.precision == "fp32" for t in make(teacher_files, teacher_amp=False).teachers)


@pytest.mark.parametrize("kw, msg", [
    (dict(compile="yes"), "model.compile must be True, False, 'auto' or a dict"),
    (dict(compile=dict(mode="max-autotune", backnd="eager")), "model.compile: unknown key(s) ['backnd']"),
    (dict(compile="auto", compile_options=dict(mod="max-autotune")), "model.compile_options: unknown key(s) ['mod']"),
    (dict(compile_options="max-autotune"), "model.compile_options must be a dict"),
    (dict(teacher_precision="fp16"), "model.teacher_precision must be one of ('amp', 'bf16', 'fp32')"),
    (dict(teacher_precision="bf16", teacher_amp=True), "teacher_amp and model.teacher_precision are both set"),
])
def test_bad_speed_options(teacher_files, kw, msg):
    with pytest.raises(ValueError) as e:
        make(teacher_files, **kw)
    assert msg in str(e.value)


@pytest.mark.parametrize("kw, msg", [
    (dict(masking=dict(teacher_keep=[0.5, 0.6])), "teacher_keep has 2 ratio"),
    (dict(masking=dict(student_keep=-0.2)), "student_keep must be in (0, 1]"),
    (dict(gating=dict(mode="vote")), "gating mode"),
    (dict(gating=dict(temprature=0.1)), "model.gating: unknown key(s) ['temprature']"),
    (dict(loss=dict(token_weight=0.0, map_weight=0.0)), "nothing to train"),
    (dict(nan_policy="ignore"), "nan_policy"),
])
def test_bad_options(teacher_files, kw, msg):
    with pytest.raises(ValueError) as e:
        m = make(teacher_files, **kw)
        m(torch.randn(1, 3, 64, 64))
    assert msg in str(e.value)


def test_teacher_grid_must_match_student(teacher_files):
    """Teachers are loaded at the student's grid x their own patch size; an explicit img_size that
    gives another grid is refused, naming the teacher."""
    student = dict(arch=dict(embed_dim=32, depth=2, num_heads=2, patch_size=8))
    m = make(teacher_files, img_size=32, student=student)  # 4x4 grid: the patch-16 teachers at 64 px
    assert [t.img_size for t in m.teachers] == [64, 64, 64] and all(t.num_positions == 16 for t in m.teachers)
    teachers = [dict(name=n, checkpoint=p, img_size=32) for n, p in teacher_files.items()]
    with pytest.raises(ValueError, match=r"mae\.pth: img_size 32 is not grid 4 x its patch size 16"):
        make(teacher_files, img_size=32, student=student, teachers=teachers)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_distill_config_builds_and_steps(config, teacher_files):
    """Each config parses; its model, with the teachers swapped for tiny files of the same layout
    and a tiny student, builds and computes its losses (so every ablation knob is exercised)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS

    import comad.engine  # noqa: F401  (registrations)

    cfg = Config.fromfile(str(config))
    model = cfg.model.to_dict()
    assert model["type"] == "CoMADDistiller"
    assert len(model["masking"]["teacher_keep"]) == len(model["teachers"])
    for t in model["teachers"]:
        t.update(checkpoint=teacher_files[t["name"]], arch=None, format="auto")
    model.update(img_size=64, student=TINY_STUDENT, decoder=dict(depth=1, num_heads=2))
    m = MODELS.build(model)
    out = m(torch.randn(2, 3, 64, 64))
    assert any(k.startswith("loss") for k in out) and all(torch.isfinite(v) for v in out.values())


# ---------------------------------------------------------------------------- alignment, CLS, masks
def _maps(m):
    return [(a.proj.weight.clone(), a.proj.bias.clone()) for a in m.adapters]


def test_alignment_fits_on_the_first_images_then_freezes_and_resumes_without_refitting(teacher_files):
    """fit_images=4 with batches of 2: fitted on steps 0 and 1, frozen after; a checkpoint taken
    mid-fit resumes the running statistics, one taken after holds the frozen maps (no refit)."""
    torch.manual_seed(0)
    m = make(teacher_files, adapter=dict(fit_images=4))
    placeholder = _maps(m)
    assert m.fit_pending() and m.alignment.method == "gcca"
    batches = [torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    m(batches[0])
    assert m.fit_pending() and m.alignment.fitted_on[0] == 2
    assert all(not torch.equal(w, w0) for (w, _), (w0, _) in zip(_maps(m), placeholder))
    mid = make(teacher_files, adapter=dict(fit_images=4))
    mid.load_state_dict(m.state_dict())
    assert mid.fit_pending() and int(mid.step) == 1
    out_m, out_mid = m(batches[1]), mid(batches[1])
    assert not m.fit_pending() and not mid.fit_pending() and bool(m.alignment.done)
    for (w1, b1), (w2, b2) in zip(_maps(m), _maps(mid)):
        assert torch.equal(w1, w2) and torch.equal(b1, b2)
    assert all(torch.equal(out_m[k], out_mid[k]) for k in out_m)
    frozen = _maps(m)
    sd = m.state_dict()
    assert sd["alignment.done"] and sd["alignment._extra_state"].numel() == 0
    later = make(teacher_files, adapter=dict(fit_images=4))
    later.load_state_dict(sd)
    assert not later.fit_pending()
    a, b = m(batches[2]), later(batches[2])
    assert all(torch.equal(a[k], b[k]) for k in a)
    for (w1, b1), (w2, b2), (w3, b3) in zip(frozen, _maps(m), _maps(later)):
        assert torch.equal(w1, w2) and torch.equal(w1, w3) and torch.equal(b1, b3)


def test_align_none_keeps_the_earlier_module_tree(teacher_files):
    keys = set(make(teacher_files, adapter=dict(align="none")).state_dict())
    assert not any(k.startswith("alignment.") or (k.startswith("adapters.") and k.endswith("proj.bias")) for k in keys)
    assert {"alignment.done", "alignment._extra_state", "adapters.0.proj.bias"} <= set(make(teacher_files).state_dict())


@pytest.mark.parametrize("align", ["gcca", "procrustes"])
def test_identical_teachers_agree_and_share_the_weights_in_the_distiller(teacher_files, align):
    """The same teacher three times, seeing the same patches (under different masks the same network
    gives other tokens: attention sees another context)."""
    teachers = [dict(name=n, checkpoint=teacher_files["mae"], format="mae") for n in ("a", "b", "c")]
    same = dict(teacher_keep=[1.0, 1.0, 1.0])
    m = make(teacher_files, teachers=teachers, masking=same, adapter=dict(align=align, fit_images=2))
    m(torch.randn(2, 3, 64, 64))
    out = m(torch.randn(2, 3, 64, 64))
    assert out["agreement"] >= 0.99
    for n in ("a", "b", "c"):
        assert abs(float(out[f"gate_shared_{n}"]) - 1 / 3) <= 1e-3
    none = make(teacher_files, teachers=teachers, masking=same, adapter=dict(align="none"))(torch.randn(2, 3, 64, 64))
    assert none["agreement"] < 0.9  # independently seeded projections of the same teacher


def _reference_token_loss(m, x, masks, cls_term: bool = True):
    """(per image the mean token KL over the student positions that have a target, and the CLS with
    ``include_cls`` unless ``cls_term`` is False; the earlier loss: the plain mean over every student
    patch token, zero targets included)."""
    from comad.gating import consensus_gating
    from comad.losses import token_kl
    from comad.models.vit import forward_kept_tokens

    t_maps, seen = m.teacher_targets(x, masks)
    p = int(m.include_cls)
    h = forward_kept_tokens(m.student, x, masks.student, return_prefix=bool(p))[0]
    h_patch = h[:, p:]
    recon = m.decoder(h_patch, masks.student)
    pred = recon.clone()
    for b in range(x.shape[0]):
        pred[b, masks.student[b]] = h_patch[b]
    g = consensus_gating(torch.cat([h[:, :p], pred], 1), t_maps, seen)
    per_image, every = [], []
    for b in range(x.shape[0]):
        terms = [token_kl(g.target[b, 0], h[b, 0])] if p and cls_term else []
        for j, i in enumerate(masks.student[b]):
            kl = token_kl(g.target[b, p + int(i)], h_patch[b, j])
            every.append(kl)
            if g.has_target[b, p + int(i)]:
                terms.append(kl)
        per_image.append(torch.stack(terms).mean() if terms else torch.zeros(()))
    return torch.stack(per_image).mean(), torch.stack(every).mean()


def _hand_masks():
    """16 positions; the student keeps 4, of which image 0's positions 2, 3 and image 1's 9 no teacher saw."""
    from comad.masking import Masks

    student = torch.tensor([[0, 1, 2, 3], [4, 9, 10, 11]])
    teachers = [torch.tensor([[0, 1, 5, 6, 7, 8, 12, 13], [4, 10, 11, 0, 1, 2, 3, 5]]).sort(1).values,
                torch.tensor([[0, 4, 5, 6, 7, 8, 9, 10, 11, 12], [4, 10, 11, 0, 1, 2, 3, 5, 6, 7]]).sort(1).values,
                torch.tensor([[1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
                              [4, 10, 11, 0, 1, 2, 3, 5, 6, 7, 8, 12, 13]]).sort(1).values]
    return Masks(student, teachers, 16)


def test_token_loss_skips_student_positions_no_teacher_saw(teacher_files):
    torch.manual_seed(0)
    m = make(teacher_files, masking=dict(nested=False), adapter=dict(fit_images=2))
    x = torch.randn(2, 3, 64, 64)
    masks = _hand_masks()
    m.compute_losses(x, masks)  # the alignment's fit
    with torch.no_grad():
        out = m.compute_losses(x, masks)
        ref, earlier = _reference_token_loss(m, x, masks)
    torch.testing.assert_close(out["loss_token"], ref, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ref, earlier, rtol=1e-3)  # the positions without a target did count before


def test_include_cls_gates_the_cls_tokens_and_matches_the_students(teacher_files):
    torch.manual_seed(0)
    m = make(teacher_files, include_cls=True, masking=dict(nested=False), adapter=dict(fit_images=2))
    x = torch.randn(2, 3, 64, 64)
    masks = _hand_masks()
    m.compute_losses(x, masks)
    with torch.no_grad():
        t_maps, seen = m.teacher_targets(x, masks)
        assert t_maps.shape == (3, 2, 17, 32) and seen[:, :, 0].all()
        for k, (teacher, adapter) in enumerate(zip(m.teachers, m.adapters)):
            cls = adapter(teacher(x, masks.teachers[k], return_cls=True)[:, 0])
            torch.testing.assert_close(t_maps[k, :, 0], cls)
        out = m.compute_losses(x, masks)
        ref = _reference_token_loss(m, x, masks)[0]
        assert not torch.allclose(ref, _reference_token_loss(m, x, masks, cls_term=False)[0], rtol=1e-3)
    torch.testing.assert_close(out["loss_token"], ref, rtol=1e-5, atol=1e-6)
    assert all(torch.isfinite(v) for v in out.values())


def test_include_cls_needs_cls_tokens(teacher_files, monkeypatch):
    from timm.models.vision_transformer import VisionTransformer

    import comad.distiller as distiller

    monkeypatch.setattr(distiller, "build_vit", lambda *a, **k: VisionTransformer(
        img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=0, class_token=False,
        global_pool="avg"))
    with pytest.raises(ValueError, match="include_cls=True needs a CLS token; the student has none"):
        make(teacher_files, include_cls=True)


@pytest.mark.parametrize("kw, msg", [
    (dict(adapter=dict(align="cca")), "model.adapter.align must be one of"),
    (dict(adapter=dict(init="pca")), "init='pca' is the per-teacher init of align='none'"),
    (dict(adapter=dict(fit_image=3)), "model.adapter: unknown key(s) ['fit_image']"),
    (dict(adapter=dict(trainable="rotation")), "adapter trainable must be one of"),
])
def test_bad_adapter_options(teacher_files, kw, msg):
    with pytest.raises(ValueError) as e:
        make(teacher_files, **kw)
    assert msg in str(e.value)


def _target_channel_std(m, steps: int) -> tuple[float, float]:
    """Train the student (and trainable adapters) on random batches; the per-channel std of the
    fused targets (equal-weight mean of the teachers that saw a position) before and after."""
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-3)
    g = torch.Generator().manual_seed(0)
    stds = []
    for step in range(steps):
        x = torch.randn(8, 3, 64, 64, generator=g)
        masks = m.make_masks(8, x.device, step=step)
        t_maps, seen = m.teacher_targets(x, masks)
        out = m.student_losses(x, masks, t_maps, seen)
        if step in (1, steps - 1):  # after the alignment's fit, and at the end
            with torch.no_grad():
                y = (t_maps * seen.unsqueeze(-1)).sum(0) / seen.sum(0).clamp(min=1).unsqueeze(-1)
                stds.append(y[seen.any(0)].std(0).mean().item())
        opt.zero_grad()
        (out["loss_token"] + out["loss_map"]).backward()
        opt.step()
    return stds[0], stds[1]


def test_orthogonal_trainable_adapters_do_not_collapse_the_targets_and_free_ones_do(teacher_files):
    """Test 4 of issue 13 over 300 steps: a trained rotation keeps the targets' per-channel std; a
    freely trained map (the trainable=True ablation) lets the loss shrink it."""
    torch.manual_seed(0)
    start, end = _target_channel_std(make(teacher_files, adapter=dict(trainable="orthogonal", fit_images=8)), 300)
    assert end > 0.85 * start, (start, end)
    torch.manual_seed(0)
    start_free, end_free = _target_channel_std(make(teacher_files, adapter=dict(trainable=True, fit_images=8)), 300)
    assert end_free < 0.6 * start_free, (start_free, end_free)

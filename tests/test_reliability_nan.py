"""Non-finite losses: stop naming the iteration and the term (keeping the last good checkpoint),
or, with ``model.nan_policy='skip'``, skip the update, count it and stop past ``max_skipped``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.optim import OptimWrapper

from comad.distiller import CoMADDistiller
from comad.nonfinite import SKIP_UPDATE_ATTR
from comad.engine.optim import ComadOptimWrapper
from comad.io import safe_torch_load
from comad.mm_compat import mmengine_safe_globals
from test_reliability_support import TEACHERS, logged_scalars, prepare_assets, run_inprocess, tiny_config


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_assets(tmp_path_factory.getbasetemp() / "reliability_assets")


def _distiller(assets: Path, **kw) -> CoMADDistiller:
    teachers = [dict(name=n, checkpoint=str(assets / "teachers" / f), format=fmt) for n, fmt, f in TEACHERS]
    return CoMADDistiller(teachers=teachers, student=dict(arch=dict(embed_dim=32, depth=2, num_heads=2)),
                          decoder=dict(depth=1, num_heads=2), img_size=64, **kw)


def _ckpt(path: Path) -> dict:
    return safe_torch_load(path, extra_globals=mmengine_safe_globals())


def test_raise_names_step_and_only_the_bad_term(assets: Path) -> None:
    m = _distiller(assets)
    m.step += 7
    with pytest.raises(FloatingPointError) as e:
        m.parse_losses({"loss_token": torch.tensor(0.5), "loss_map": torch.tensor(float("inf")),
                        "gate_mae": torch.tensor(0.3)})
    msg = str(e.value)
    assert "step 7: loss_map = inf" in msg and "loss_token =" not in msg and "last good one" in msg


def test_skip_marks_the_loss_counts_and_stops_past_max_skipped(assets: Path) -> None:
    m = _distiller(assets, nan_policy="skip", max_skipped=2)
    good, logs = m.parse_losses({"loss_token": torch.tensor(0.5), "loss_map": torch.tensor(0.25)})
    assert not getattr(good, SKIP_UPDATE_ATTR, False) and float(good) == 0.75 and float(logs["skipped_steps"]) == 0
    for n in (1, 2):
        loss, logs = m.parse_losses({"loss_token": torch.tensor(float("nan")), "loss_map": torch.tensor(0.25)})
        assert getattr(loss, SKIP_UPDATE_ATTR) is True
        assert int(m.skipped_steps) == n and float(logs["skipped_steps"]) == n
        assert "loss" not in logs  # a NaN would poison the smoothed loss of the log window
    with pytest.raises(FloatingPointError, match=r"3 skipped step\(s\), more than model.max_skipped = 2"):
        m.parse_losses({"loss_token": torch.tensor(float("nan")), "loss_map": torch.tensor(0.25)})
    assert "skipped_steps" in m.state_dict()  # a resumed run keeps counting


@pytest.mark.parametrize("kw, msg", [(dict(nan_policy="ignore"), "model.nan_policy must be one of ('raise', 'skip')"),
                                     (dict(max_skipped=-1), "model.max_skipped must be an int >= 0, got -1")])
def test_bad_nan_options(assets: Path, kw: dict, msg: str) -> None:
    with pytest.raises(ValueError) as e:
        _distiller(assets, **kw)
    assert msg in str(e.value)


def test_optim_wrapper_skips_marked_step_entirely() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    ow = ComadOptimWrapper(torch.optim.AdamW(lin.parameters(), lr=0.1))
    ref = OptimWrapper(torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1))
    before = [p.detach().clone() for p in lin.parameters()]
    loss = lin(torch.randn(4, 3)).sum() * 0 + torch.zeros(())  # has a graph, but marked: no backward
    setattr(loss, SKIP_UPDATE_ATTR, True)
    ow.update_params(loss)
    assert all(torch.equal(a, b) for a, b in zip(before, lin.parameters()))
    assert ow.optimizer.state_dict()["state"] == {}  # AdamW never stepped: no moments, no step count
    assert ow.inner_count == 1 and all(p.grad is None for p in lin.parameters())
    ow.update_params(lin(torch.randn(4, 3)).sum())  # an unmarked step updates as mmengine's wrapper
    assert not all(torch.equal(a, b) for a, b in zip(before, lin.parameters())) and ow.inner_count == 2
    assert type(ref).update_params is not type(ow).update_params


@pytest.mark.heavy
def test_run_stops_at_the_nan_iteration_and_keeps_last_good_checkpoint(assets, tmp_path, monkeypatch) -> None:
    cfg = tiny_config(tmp_path / "tiny_nan_raise.py", assets,
                      "custom_hooks = [dict(type='ComadRunHook', export=True, latest_pointer=None),"
                      " dict(type='PoisonAtIter', iterations=[6])]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    wd = tmp_path / "wd"
    with pytest.raises(FloatingPointError) as e:
        run_inprocess(cfg, wd)
    msg = str(e.value)
    assert "step 6:" in msg and "loss_token = nan" in msg and "loss_map = nan" in msg, msg
    assert sorted(p.name for p in wd.glob("iter_*.pth")) == ["iter_4.pth"]
    ck = _ckpt(wd / "iter_4.pth")  # the last good checkpoint is complete and finite
    assert ck["meta"]["iter"] == 4 and all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())
    assert not (wd / "student").exists()


@pytest.mark.heavy
def test_run_skips_the_nan_step_on_policy_skip(assets, tmp_path, monkeypatch) -> None:
    cfg = tiny_config(tmp_path / "tiny_nan_skip.py", assets,
                      "custom_hooks = [dict(type='ComadRunHook', export=True, latest_pointer=None),"
                      " dict(type='PoisonAtIter', iterations=[6])]\n"
                      "model = dict(nan_policy='skip', max_skipped=1)\n"
                      "schedule = dict(max_iters=8)\n"
                      "default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=20))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    wd = tmp_path / "wd"
    run_inprocess(cfg, wd)
    assert (wd / "student" / "student.safetensors").is_file()
    c5, c6, c7 = (_ckpt(wd / f"iter_{i}.pth") for i in (5, 6, 7))
    student = [k for k in c5["state_dict"] if k.startswith("student.")]
    assert all(torch.equal(c5["state_dict"][k], c6["state_dict"][k]) for k in student), "step 6 was not skipped"
    assert not all(torch.equal(c6["state_dict"][k], c7["state_dict"][k]) for k in student), "step 7 did not train"

    def adam_steps(c):
        return {float(s["step"]) for s in c["optimizer"]["state"].values()}

    assert adam_steps(c5) == adam_steps(c6) == {5.0} and adam_steps(c7) == {6.0}
    assert int(_ckpt(wd / "iter_8.pth")["state_dict"]["skipped_steps"]) == 1
    logged = logged_scalars(wd)
    assert logged[5]["skipped_steps"] == 0 and logged[6]["skipped_steps"] == 1 and logged[8]["skipped_steps"] == 1
    # the skipped step's NaN never reaches the log (it would poison the smoothed loss of a window)
    assert all(v == v for row in logged.values() for v in row.values() if isinstance(v, float))


@pytest.mark.heavy
def test_run_stops_once_more_than_max_skipped(assets, tmp_path, monkeypatch) -> None:
    cfg = tiny_config(tmp_path / "tiny_nan_max.py", assets,
                      "custom_hooks = [dict(type='ComadRunHook', export=True, latest_pointer=None),"
                      " dict(type='PoisonAtIter', iterations=[3, 6])]\n"
                      "model = dict(nan_policy='skip', max_skipped=1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    wd = tmp_path / "wd"
    with pytest.raises(FloatingPointError, match=r"step 6: .*2 skipped step\(s\), more than model.max_skipped = 1"):
        run_inprocess(cfg, wd)
    assert sorted(p.name for p in wd.glob("iter_*.pth")) == ["iter_4.pth"]

"""Parameter groups as timm and MAE make them, for mmengine's optimizer wrappers.

:class:`TimmParamGroupsConstructor` (``optim_wrapper.constructor``) builds the optimizer of
``optim_wrapper.optimizer`` over groups chosen by ``paramwise_cfg.mode``:

- ``'layer_decay'`` (the fine-tune): timm's ``param_groups_layer_decay`` over the model's timm
  network (``model.net``): the lr of block ``i`` of ``L`` scaled by ``layer_decay ** (L + 1 - i)``,
  no weight decay on 1-d parameters, position embeddings and tokens (``no_weight_decay()``);
  each group's ``lr`` is the optimizer's lr times its ``lr_scale``, so mmengine's schedulers, which
  scale every group from its initial lr, keep the ratios (MAE's ``lr * lr_scale``);
- ``'mae_lars'`` (the linear probes): the trainable matrices adapted by LARS and decayed, 1-d
  parameters plain SGD-momentum (MAE's LARS skips 1-d parameters).

timm's LARS is registered as ``TimmLars`` in ``OPTIMIZERS``.
"""
from __future__ import annotations

import copy
from typing import Any

from mmengine.model import is_model_wrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from timm.optim import Lars
from torch import nn

__all__ = ["TimmParamGroupsConstructor", "MODES"]

OPTIMIZERS.register_module(name="TimmLars", module=Lars, force=True)
MODES = ("layer_decay", "mae_lars")


def _layer_decay_groups(module: nn.Module, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    from timm.optim import param_groups_layer_decay

    net = getattr(module, "net", None)
    if net is None or not hasattr(net, "group_matcher"):
        raise TypeError(f"paramwise_cfg.mode='layer_decay': {type(module).__name__} has no timm network 'net' "
                        "with group_matcher (the fine-tune's ViTClassifier has)")
    skip = net.no_weight_decay() if hasattr(net, "no_weight_decay") else ()
    groups = param_groups_layer_decay(net, weight_decay=weight_decay, no_weight_decay_list=skip, layer_decay=layer_decay)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return groups


def _mae_lars_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    mats = [p for p in module.parameters() if p.requires_grad and p.ndim > 1]
    vecs = [p for p in module.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [dict(params=mats, weight_decay=weight_decay, always_adapt=True)]
    if vecs:
        groups.append(dict(params=vecs, weight_decay=0.0, always_adapt=False))
    return groups


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TimmParamGroupsConstructor:
    """Build ``optim_wrapper`` with timm / MAE parameter groups (see the module docstring).

    Args:
        optim_wrapper_cfg: the config's ``optim_wrapper`` (``type``, ``optimizer``, wrapper options).
        paramwise_cfg: ``dict(mode='layer_decay', layer_decay=0.75)`` or ``dict(mode='mae_lars')``.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        self.wrapper_cfg = copy.deepcopy(dict(optim_wrapper_cfg))
        self.optimizer_cfg = dict(self.wrapper_cfg.pop("optimizer"))
        self.paramwise_cfg = dict(paramwise_cfg or {})
        mode = self.paramwise_cfg.get("mode")
        if mode not in MODES:
            raise ValueError(f"optim_wrapper.paramwise_cfg.mode {mode!r}: expected one of {MODES}")
        if mode == "layer_decay" and "layer_decay" not in self.paramwise_cfg:
            raise ValueError("optim_wrapper.paramwise_cfg: mode 'layer_decay' needs 'layer_decay' (e.g. 0.75)")

    def __call__(self, model: nn.Module) -> Any:
        module = model.module if is_model_wrapper(model) else model
        opt = dict(self.optimizer_cfg)
        lr, wd = float(opt["lr"]), float(opt.pop("weight_decay", 0.0))
        if self.paramwise_cfg["mode"] == "layer_decay":
            groups = _layer_decay_groups(module, lr, wd, float(self.paramwise_cfg["layer_decay"]))
        else:
            groups = _mae_lars_groups(module, wd)
        optimizer = OPTIMIZERS.build(dict(opt, params=groups))
        return OPTIM_WRAPPERS.build(self.wrapper_cfg, default_args=dict(optimizer=optimizer))

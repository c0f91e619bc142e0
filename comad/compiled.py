"""``model.compile``: the loss computation as one ``torch.compile`` graph (docs/method.md §2, "execution").

:func:`compile_settings` reads ``model.compile`` / ``model.compile_options``;
:func:`compile_losses` compiles the distiller's loss function on first use and names
``model.compile=False`` when torch.compile fails.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from mmengine.logging import print_log

from .distiller_options import COMPILE_KEYS, check_keys, compile_options_of

__all__ = ["compile_settings", "compile_losses"]


def compile_settings(compile: bool | str | dict[str, Any],
                     compile_options: dict[str, Any] | None) -> tuple[bool, dict[str, Any] | None]:
    """(auto, torch.compile kwargs or None): ``'auto'`` compiles on CUDA only; ``compile_options``
    are merged under the kwargs of ``compile`` (a base config's ``'auto'`` keeps them)."""
    auto = compile == "auto"
    cfg = {} if auto else compile_options_of(compile)
    if compile_options is not None:
        if not isinstance(compile_options, dict):
            raise ValueError(f"model.compile_options must be a dict of torch.compile options {COMPILE_KEYS}, "
                             f"got {compile_options!r}")
        check_keys("compile_options", compile_options, COMPILE_KEYS)
        if cfg is not None:
            cfg = {**compile_options, **cfg}
    return auto, cfg


def compile_losses(fn: Callable[..., Any], cfg: dict[str, Any], device: torch.device) -> Callable[..., Any]:
    """``torch.compile(fn, **cfg)``, logged; a failure of torch.compile is a RuntimeError naming
    ``model.compile=False``."""
    import torch._dynamo

    dyn = torch._dynamo.config
    # one graph per token-count signature; a keep-ratio schedule brings a few more
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dyn, name):
            setattr(dyn, name, max(int(getattr(dyn, name)), 64))
    print_log(f"model.compile: compiling the loss computation with torch.compile({cfg}) on {device} (about a "
              "minute for three ViT-B teachers; model.compile=False trains eagerly)", logger="current")
    compiled = torch.compile(fn, **cfg)

    def run(*args: Any) -> Any:
        try:
            return compiled(*args)
        except torch._dynamo.exc.TorchDynamoException as e:
            raise RuntimeError(f"model.compile: torch.compile failed on {device} ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}); set model.compile=False to train "
                               "eagerly") from e
    return run

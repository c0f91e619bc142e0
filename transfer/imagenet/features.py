"""Pooling, feature extraction, the on-disk feature cache, and the unchanged-backbone check.

Feature cache layout (``cache_dir``)::

    manifest.json          key (student sha256, pooling, img size, transform, split, classes),
                           chunks [{file, count}], num_samples, feature_dim, complete
    chunk_00000.safetensors  {'features': (n, D) float32, 'labels': (n,) int64}
    ...

Every chunk and every manifest update is written atomically; the manifest lists a chunk only
after the chunk is on disk, so an interrupted extraction resumes after its last listed chunk,
and a cache made for another student or setting is never read (it is rebuilt).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from comad import console
from comad.io import atomic_save_safetensors, atomic_write_json

__all__ = ["POOLINGS", "pool_tokens", "embed", "extract_features", "FeatureCache",
           "backbone_snapshot", "assert_backbone_unchanged"]

POOLINGS = ("cls", "mean")


def pool_tokens(vit: nn.Module, tokens: Tensor, pooling: str) -> Tensor:
    """(B, P+N, D) output of ``forward_features`` -> (B, D): 'cls' token or 'mean' of patch tokens."""
    if pooling == "cls":
        if not getattr(vit, "has_class_token", vit.num_prefix_tokens > 0):
            raise ValueError("pooling 'cls': this ViT has no class token; use pooling 'mean'")
        return tokens[:, 0]
    if pooling == "mean":
        return tokens[:, vit.num_prefix_tokens:].mean(dim=1)
    raise ValueError(f"pooling {pooling!r}: expected one of {POOLINGS}")


def embed(vit: nn.Module, images: Tensor, pooling: str) -> Tensor:
    """Pooled features of the final-norm tokens (no grad is taken by the caller's context)."""
    return pool_tokens(vit, vit.forward_features(images), pooling)


def _autocast(device: torch.device, amp: str | None):
    if amp in (None, "none", "fp32"):
        return torch.autocast(device.type, enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda")


@torch.no_grad()
def extract_features(vit: nn.Module, loader: DataLoader, pooling: str, device: torch.device | str = "cpu",
                     amp: str | None = None, desc: str | None = "features") -> tuple[Tensor, Tensor]:
    """(features float32 (N, D), labels int64 (N,)) over a loader of ``(images, labels)`` or
    ``dict(inputs, label)`` batches, the backbone in eval mode (a bar unless ``desc`` is None)."""
    device = torch.device(device)
    was_training = vit.training
    vit.eval()
    feats, labels = [], []
    for batch in tqdm(loader, desc=desc, leave=False, mininterval=5, disable=desc is None):
        images, target = (batch["inputs"], batch["label"]) if isinstance(batch, dict) else batch
        with _autocast(device, amp):
            f = embed(vit, images.to(device, non_blocking=True), pooling)
        feats.append(f.float().cpu())
        labels.append(torch.as_tensor(target, dtype=torch.int64))
    vit.train(was_training)
    dim = getattr(vit, "embed_dim", 0)
    return (torch.cat(feats) if feats else torch.empty(0, dim)), (torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64))


class FeatureCache:
    """Features of one dataset split, extracted once and stored in chunks (see module doc)."""

    MANIFEST = "manifest.json"

    def __init__(self, cache_dir: str | Path) -> None:
        self.dir = Path(cache_dir)

    @property
    def manifest_path(self) -> Path:
        return self.dir / self.MANIFEST

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when there is none (a broken one raises ``ValueError`` naming it)."""
        if not self.manifest_path.is_file():
            return None
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"feature cache manifest {self.manifest_path}: not valid JSON: {e}") from None

    def build(self, vit: nn.Module, dataset: Dataset, key: dict[str, Any], pooling: str, batch_size: int,
              chunk_size: int, num_workers: int = 0, device: torch.device | str = "cpu", amp: str | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
        """Extract (or resume, or reuse) the cache for ``key``; return the complete manifest."""
        if chunk_size % batch_size:
            raise ValueError(f"feature cache: chunk_size {chunk_size} must be a multiple of batch_size {batch_size}")
        key = json.loads(json.dumps(dict(key, pooling=pooling), sort_keys=True, default=str))
        manifest = self.read_manifest()
        if manifest is not None and manifest.get("key") != key:
            log(f"feature cache {self.dir}: made for another key, rebuilding (old {manifest.get('key')}, new {key})")
            for c in manifest.get("chunks", []):
                (self.dir / c["file"]).unlink(missing_ok=True)
            manifest = None
        n = len(dataset)
        if manifest is None:
            manifest = dict(key=key, num_samples=n, chunk_size=chunk_size, chunks=[], complete=False, feature_dim=None)
        if manifest["complete"]:
            log(f"feature cache {self.dir}: reusing {n} samples")
            return manifest
        done = sum(c["count"] for c in manifest["chunks"])
        if done:
            log(f"feature cache {self.dir}: resuming after {done}/{n} samples")
        starts = range(done, n, chunk_size)
        for start in tqdm(starts, desc=f"cache {self.dir.name}", leave=False, mininterval=5):
            idx = list(range(start, min(start + chunk_size, n)))
            loader = DataLoader(Subset(dataset, idx), batch_size=batch_size, shuffle=False, num_workers=num_workers)
            feats, labels = extract_features(vit, loader, pooling, device=device, amp=amp,
                                           desc=f"chunk {start // chunk_size}" if console.verbose() else None)
            name = f"chunk_{start // chunk_size:05d}.safetensors"
            atomic_save_safetensors({"features": feats, "labels": labels}, self.dir / name)
            manifest["chunks"].append(dict(file=name, count=len(idx)))
            manifest["feature_dim"] = int(feats.shape[1])
            manifest["complete"] = start + len(idx) >= n
            atomic_write_json(manifest, self.manifest_path)
        if not manifest["complete"]:  # an empty dataset
            manifest["complete"] = True
            atomic_write_json(manifest, self.manifest_path)
        return manifest

    def load(self) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """(features, labels, manifest) of a complete cache; errors name the file."""
        from safetensors.torch import load_file

        manifest = self.read_manifest()
        if manifest is None or not manifest.get("complete"):
            raise FileNotFoundError(f"feature cache {self.dir}: no complete manifest {self.MANIFEST}; build it first")
        feats, labels = [], []
        for c in manifest["chunks"]:
            path = self.dir / c["file"]
            if not path.is_file():
                raise FileNotFoundError(f"feature cache {self.dir}: chunk {path} listed in the manifest is missing")
            data = load_file(str(path))
            if data["features"].shape[0] != c["count"]:
                raise ValueError(f"feature cache chunk {path}: {data['features'].shape[0]} rows, manifest says {c['count']}")
            feats.append(data["features"])
            labels.append(data["labels"])
        total = sum(c["count"] for c in manifest["chunks"])
        if total != manifest["num_samples"]:
            raise ValueError(f"feature cache {self.dir}: chunks hold {total} samples, manifest says {manifest['num_samples']}")
        return torch.cat(feats), torch.cat(labels), manifest


def backbone_snapshot(module: nn.Module) -> dict[str, Tensor]:
    """Copies of every parameter and buffer (``state_dict``) of a backbone."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_backbone_unchanged(module: nn.Module, snapshot: dict[str, Tensor]) -> None:
    """MoCo v3-style sanity check: the probed backbone must equal its snapshot bit for bit.

    Raises ``AssertionError`` naming the first changed (or missing / added) entry.
    """
    current = module.state_dict()
    for name, before in snapshot.items():
        if name not in current:
            raise AssertionError(f"backbone check: parameter '{name}' disappeared during probing")
        now = current[name].detach()
        if now.shape != before.shape or not torch.equal(now.to(before.device), before):
            diff = (now.float().to(before.device) - before.float()).abs().max().item() if now.shape == before.shape else float("nan")
            raise AssertionError(f"backbone check: parameter '{name}' changed during probing (max abs diff {diff:.3g}); "
                                 f"a probe must leave the backbone frozen")
    added = [k for k in current if k not in snapshot]
    if added:
        raise AssertionError(f"backbone check: parameter '{added[0]}' appeared during probing")

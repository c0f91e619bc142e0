"""Real labelled images for the demo form of the ImageNet tasks, in ImageFolder layout.

Default source: scikit-learn's digits (1,797 real 8x8 handwritten digits, 10 classes),
upscaled (bicubic) to ``img_size`` RGB. Alternative: Fashion-MNIST from the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``), a class-balanced subset.
The set is written once (:func:`comad.data.once.build_once`: a temporary folder renamed into
place, its marker holding the parameters) and reused.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from comad.data.idx import read_idx
from comad.data.once import build_once
from comad.repo import REPO_ROOT

__all__ = ["DEFAULT_DEMO_DIR", "FASHION_MNIST_DIR", "ensure_demo_imagenet", "load_source"]

DEFAULT_DEMO_DIR = REPO_ROOT / "work_dirs" / "demo_data" / "imagenet-demo"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
KIND = "demo-imagenet"


def load_source(source: str, per_class: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 (N, h, w), labels (N,), class names) of a demo source."""
    if source == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
        labels, names = d.target.astype(np.int64), [f"digit_{i}" for i in range(10)]
    elif source == "fashion-mnist":
        files = [FASHION_MNIST_DIR / n for n in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"demo source 'fashion-mnist': missing {missing}; install the Debian package "
                                    f"dataset-fashion-mnist or use source 'digits'")
        images, labels = read_idx(files[0]), read_idx(files[1]).astype(np.int64)
        names = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    else:
        raise ValueError(f"demo source {source!r}: expected 'digits' or 'fashion-mnist'")
    if per_class is not None:
        keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(names))])
        images, labels = images[keep], labels[keep]
    return images, labels, names


def ensure_demo_imagenet(root: str | Path = DEFAULT_DEMO_DIR, img_size: int = 32, source: str = "digits",
                         val_fraction: float = 0.2, per_class: int | None = None, seed: int = 0) -> Path:
    """Make (once) ``root/{train,val}/<class>/*.JPEG`` from a real labelled source; return ``root``.

    An existing set is reused when its marker records the same parameters; a set made with
    other parameters raises ``ValueError`` naming both (delete the folder or choose another).
    """
    params = dict(source=source, img_size=int(img_size), val_fraction=float(val_fraction), per_class=per_class, seed=int(seed))

    def make(tmp: Path) -> None:
        from PIL import Image
        from sklearn.model_selection import train_test_split

        images, labels, names = load_source(source, per_class)
        idx_train, idx_val = train_test_split(np.arange(len(labels)), test_size=val_fraction, stratify=labels,
                                              random_state=seed)
        for split, idx in (("train", idx_train), ("val", idx_val)):
            for c in names:
                (tmp / split / c).mkdir(parents=True)
            for i in sorted(idx):
                img = Image.fromarray(images[i]).resize((img_size, img_size), Image.BICUBIC).convert("RGB")
                img.save(tmp / split / names[labels[i]] / f"{source}_{i:06d}.JPEG", quality=95)

    return build_once(root, KIND, params, make, on_mismatch="raise")

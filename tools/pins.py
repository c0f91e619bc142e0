"""Print the pinned requirement(s) of pyproject.toml for the given package names.

``python tools/pins.py torch torchvision`` -> ``torch==2.14.1 torchvision==0.29.1``. Keeps every
version in pyproject.toml, so the set-up script never repeats a number.
"""
import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
by_name = {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower(): r for r in reqs}
extra_pins = {"mmcv": "mmcv==2.1.0"}  # source-only on PyPI; built by tools/build_mmcv.sh
out = []
for name in sys.argv[1:]:
    req = by_name.get(name.lower()) or extra_pins.get(name.lower())
    if req is None:
        sys.exit(f"tools/pins.py: {name!r} is not pinned in pyproject.toml")
    out.append(req)
print(" ".join(out))

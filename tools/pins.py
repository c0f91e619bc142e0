"""Print the pinned requirement(s) of pyproject.toml for the given package names.

``python tools/pins.py torch torchvision`` -> ``torch==2.14.1 torchvision==0.29.1``. Keeps every
version in pyproject.toml, so the set-up script never repeats a number.
``--extra NAME`` prints an optional-dependency group; ``--no-deps`` the ``[tool.comad] no-deps`` list.
"""
import re
import sys
import tomllib
from pathlib import Path

pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
project, no_deps = pyproject["project"], pyproject.get("tool", {}).get("comad", {}).get("no-deps", [])
if sys.argv[1:2] in (["--no-deps"], ["--extra"]):
    extras = project["optional-dependencies"]
    if sys.argv[1] == "--extra" and (len(sys.argv) != 3 or sys.argv[2] not in extras):
        sys.exit(f"tools/pins.py: --extra takes one of {sorted(extras)}")
    print(" ".join(no_deps if sys.argv[1] == "--no-deps" else extras[sys.argv[2]]))
    sys.exit(0)
reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra] + no_deps
by_name = {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower(): r for r in reqs}
extra_pins = {"mmcv": "mmcv==2.1.0"}  # source-only on PyPI; built by tools/build_mmcv.sh
out = []
for name in sys.argv[1:]:
    req = by_name.get(name.lower()) or extra_pins.get(name.lower())
    if req is None:
        sys.exit(f"tools/pins.py: {name!r} is not pinned in pyproject.toml")
    out.append(req)
print(" ".join(out))

"""A plain (non-editable) install carries everything it needs and never reads outside itself.

The wheel is built from the checkout and installed into a scratch folder; the CLI then runs from
another directory with a Python audit hook that records every file opened and every folder
listed. The development environment's editable install is taken out of the probe's import system.
Nothing may come from the checkout or from beside it (where development machines keep a
`shared/` folder a user never has): scenarios, trace, training configs and the shipped
checkpoint all come from the installed package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wheel_helpers import REPO, build_wheel

pytestmark = pytest.mark.slow


PROBE = r"""
import json, os, sys
# As in an environment with only the wheel installed: the development checkout's editable
# install (a meta-path finder and a path hook) is taken out, the scratch install put first.
sys.meta_path = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")]
sys.path = [sys.argv[1]] + [p for p in sys.path if "__editable__" not in p]
touched = []
def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir", "glob.glob") and args:
        path = args[0]
        if isinstance(path, (str, bytes)) and path:
            touched.append(os.path.abspath(os.fsdecode(path)))  # relative to the probe's cwd
sys.addaudithook(hook)
import gpuparley
from gpuparley.cli import app
out = sys.argv[2]
commands = [
    ["scenarios"],
    ["simulate", "--scenario", "openb", "--scheduler", "first-fit", "--out", out + "/sim"],
    ["eval", "--scenario", "tiny", "--policies",
     "fgd,scripted:truthful,learned:checkpoints/default", "--seeds", "0", "--out", out + "/eval"],
    ["train", "--help"],
]
codes = []
for args in commands:
    try:
        app(args, standalone_mode=False)
        codes.append(0)
    except SystemExit as exit:
        codes.append(exit.code)
from gpuparley.train.config import load_config
load_config("default")
print(json.dumps({"package": gpuparley.__file__, "codes": codes, "touched": touched}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), str(wheel)],
        check=True, timeout=600,
    )  # fmt: skip
    return target


def test_installed_cli_reads_only_its_own_data(installed: Path, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GPUPARLEY_")}
    env.update(HOME=str(tmp_path), MPLCONFIGDIR=str(tmp_path / "mpl"), COLUMNS="100")
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(installed), str(tmp_path / "out")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["package"]).is_relative_to(installed)
    assert report["codes"] == [0, 0, 0, 0]
    environment = (Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve())
    outside = [
        path
        for path in map(lambda p: Path(p).resolve(), report["touched"])
        if path.is_relative_to(REPO.parent)
        and not path.is_relative_to(installed)
        and not path.is_relative_to(tmp_path)
        and not any(path.is_relative_to(prefix) for prefix in environment)
    ]
    assert outside == [], outside[:10]
    opened = [Path(p) for p in report["touched"]]
    assert any(p.name == "openb_pod_list_dev.csv" and p.is_relative_to(installed) for p in opened)
    assert any(p.name == "policy.onnx" and p.is_relative_to(installed) for p in opened)
    metrics = json.loads((tmp_path / "out" / "sim" / "metrics.json").read_text())
    assert metrics["trace_files"]["workload.trace.path"]["rows"] == 5706

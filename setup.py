"""Package mapping for the one `gpuparley` import namespace.

The card's top-level folders (`envs/`, `agents/`, `train/`, `deploy/`, `configs/`,
`checkpoints/`) are subpackages of `gpuparley`. setuptools needs every (sub)package listed with
its folder, so the list is computed here rather than maintained by hand in pyproject.toml.
Folders that only hold data (scenarios, the openb trace, the shipped checkpoint, the Go modules
the cluster components are built from) are listed too, and `DATA_FILES` says which of their
files every install carries.
"""

from setuptools import find_namespace_packages, setup

SUBPACKAGE_FOLDERS = ("envs", "agents", "train", "deploy", "configs", "checkpoints")
DATA_FILES = ["*.yaml", "*.csv", "*.md", "*.json", "*.onnx", "*.zip", "*.go", "go.mod", "go.sum"]
SKIP = ["__pycache__", "*.__pycache__"]

package_dir = {"gpuparley": "gpuparley"}
packages = [
    "gpuparley",
    *(f"gpuparley.{p}" for p in find_namespace_packages("gpuparley", exclude=SKIP)),
]
for folder in SUBPACKAGE_FOLDERS:
    root = f"gpuparley.{folder}"
    package_dir[root] = folder
    packages.append(root)
    for sub in find_namespace_packages(folder, exclude=SKIP):
        packages.append(f"{root}.{sub}")
        package_dir[f"{root}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(package_dir=package_dir, packages=packages, package_data={"*": DATA_FILES})

"""Package mapping for the one `gpuparley` import namespace.

The card's top-level folders (`envs/`, `agents/`, `train/`, `deploy/`) are subpackages of
`gpuparley`. setuptools needs every (sub)package listed with its folder, so the list is computed
here rather than maintained by hand in pyproject.toml.
"""

from setuptools import find_packages, setup

SUBPACKAGE_FOLDERS = {"envs": "envs", "agents": "agents", "train": "train", "deploy": "deploy"}

package_dir = {"gpuparley": "gpuparley"}
packages = ["gpuparley", *(f"gpuparley.{p}" for p in find_packages("gpuparley"))]
for name, folder in SUBPACKAGE_FOLDERS.items():
    root = f"gpuparley.{name}"
    package_dir[root] = folder
    packages.append(root)
    for sub in find_packages(folder):
        packages.append(f"{root}.{sub}")
        package_dir[f"{root}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(package_dir=package_dir, packages=packages)

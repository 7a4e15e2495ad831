"""Packaging for the one `gpuparley` import namespace.

The card's top-level folders (`envs/`, `agents/`, `policy/`, `train/`, `deploy/`, `configs/`,
`checkpoints/`) are subpackages of `gpuparley`: `gpuparley/<folder>` is a symlink to each, so the
source tree is an ordinary package that every tool (setuptools, mypy, import-linter) reads
as is. Folders that only hold data (scenarios, the openb trace, the shipped checkpoint, the Go
modules the cluster components are built from) are packages too, and `DATA_FILES` says which of
their files every install carries.
"""

from setuptools import find_namespace_packages, setup

DATA_FILES = [
    "*.yaml",
    "*.csv",
    "*.md",
    "*.json",
    "*.onnx",
    "*.zip",
    "*.go",
    "go.mod",
    "go.sum",
    "*.pml",
]

packages = find_namespace_packages(include=["gpuparley", "gpuparley.*"], exclude=["*__pycache__*"])
setup(packages=packages, package_data={"": DATA_FILES})

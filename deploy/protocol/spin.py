"""The spin model checker: found in gpuparley's cache, or fetched there from Debian's package.

`gpuparley protocol spin` (what `make spin` runs) makes sure `<cache>/bin/spin` exists, beside
the Kubernetes binaries `gpuparley cluster build` caches (`deploy/cluster/build.py`), without
root: `apt-get download spin` needs only the package lists apt already has, and `dpkg-deb -x`
unpacks the package's `usr/bin/spin` into a scratch folder. A stamp beside the binary records
the package file and its sha256. Where there is no apt, a `spin` on PATH is used instead.

spin needs a C compiler to build its verifiers (and runs the C preprocessor on the model):
`$CC`, else `gcc`, else `cc`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from gpuparley.deploy.cluster.build import bin_dir

SPIN_PACKAGE = "spin"  # Debian's package (spin 6.5.2 in bookworm)
INSTALL_COMMAND = "gpuparley protocol spin"


class SpinError(RuntimeError):
    """spin (or the C compiler it needs) is missing or could not be fetched; the text says how
    to get it."""


def cached_spin(cache: str | os.PathLike[str] | None = None) -> Path:
    """Where the fetched spin lives: `<cache>/bin/spin`."""
    return bin_dir(cache) / "spin"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_spin(cache: str | os.PathLike[str] | None = None) -> Path:
    """The spin to use: the cached one, else one on PATH; SpinError naming the fix otherwise."""
    cached = cached_spin(cache)
    if _executable(cached):
        return cached
    on_path = shutil.which("spin")
    if on_path:
        return Path(on_path)
    raise SpinError(
        f"spin is not installed (looked for {cached} and on PATH): run `{INSTALL_COMMAND}` "
        "(or `make spin`), or install Debian's package `spin`"
    )


def find_compiler() -> str:
    """The C compiler spin's verifiers are built with: $CC, gcc or cc."""
    for candidate in (os.environ.get("CC"), "gcc", "cc"):
        if candidate and shutil.which(candidate):
            return candidate
    raise SpinError("no C compiler (set $CC, or install gcc): spin builds its verifiers in C")


def _run(command: list[str], cwd: Path, what: str) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise SpinError(f"{what} failed (exit {done.returncode}): " + " | ".join(tail))


def install_spin(cache: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """Fetch Debian's spin into the cache (idempotent: a cached binary is kept unless `force`).
    Without apt-get and dpkg-deb, a spin already on PATH is returned."""
    target = cached_spin(cache)
    if _executable(target) and not force:
        return target
    apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if apt is None or dpkg is None:
        on_path = shutil.which("spin")
        if on_path:
            return Path(on_path)
        raise SpinError(
            "cannot fetch spin: no apt-get/dpkg-deb here and no spin on PATH; install spin "
            "(Debian/Ubuntu package `spin`, or https://spinroot.com) and put it on PATH"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".spin-") as scratch:
        folder = Path(scratch)
        _run(
            [apt, "download", SPIN_PACKAGE],
            folder,
            f"`apt-get download {SPIN_PACKAGE}` (run `apt-get update` first if apt has no lists)",
        )
        debs = sorted(folder.glob(f"{SPIN_PACKAGE}_*.deb"))
        if not debs:
            raise SpinError(f"`apt-get download {SPIN_PACKAGE}` left no .deb in {folder}")
        _run([dpkg, "-x", str(debs[0]), "root"], folder, f"`dpkg-deb -x {debs[0].name}`")
        unpacked = folder / "root" / "usr" / "bin" / "spin"
        if not _executable(unpacked):
            raise SpinError(f"{debs[0].name} holds no usr/bin/spin")
        staged = folder / "spin"
        shutil.copy2(unpacked, staged)
        os.replace(staged, target)  # never a half-written binary at the target
        stamp = {
            "package": debs[0].name,
            "sha256": hashlib.sha256(debs[0].read_bytes()).hexdigest(),
            "version": spin_version(target),
        }
    target.with_name(target.name + ".stamp").write_text(json.dumps(stamp, indent=2) + "\n")
    return target


def spin_version(spin: Path) -> str:
    """`spin -V`, e.g. 'Spin Version 6.5.2 -- 6 December 2019'."""
    done = subprocess.run([str(spin), "-V"], capture_output=True, text=True)
    return (done.stdout or done.stderr).strip()

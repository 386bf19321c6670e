"""Podman on this machine, set up the way it works here, for the container tests.

None of this is in the Dockerfile a user reads: it is what a machine of this kind (a VM with a
hybrid cgroup layout, no container registry reachable, the package registries only through a TLS
proxy whose CA is in the host's bundle) needs to build and run the image at all:

- ``runc``, as crun refuses the cgroup layout; a ``containers.conf`` with ``default_ulimits = []``,
  since raising limits is not permitted; ``--network=host`` for builds and containers;
- the base image made from Debian's packages with ``mmdebstrap`` (python3, python3-venv and
  ca-certificates: what the Dockerfile says it needs) and ``podman import``ed, as no registry
  serves the official one; the tarball is cached outside the checkout, under a name made of its
  inputs, and the imported image is tagged with the same name, so a second run costs nothing;
- the host's CA bundle mounted read-only into the build, for pip behind the proxy.

Without podman or mmdebstrap the tests skip, saying why, except under CI, where they fail: the test
command installs both (as root) when they are missing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
PACKAGES = "python3,python3-venv,ca-certificates"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
CONF = '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n'


def require_tools() -> None:
    missing = [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not installed (apt-get install -y podman runc mmdebstrap)")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    folder = Path(base) / "bfstream-tests"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def environment() -> dict[str, str]:
    """The process environment with this machine's containers.conf (written once, in the cache)."""
    conf = cache_dir() / "containers.conf"
    if not conf.is_file() or conf.read_text() != CONF:
        conf.write_text(CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", "--runtime", "runc", *args],
        capture_output=True, text=True, timeout=timeout, check=False, env=environment(),
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-3000:]}")
    return done


def base_image() -> str:
    """A plain Debian with only python3 and python3-venv: the least the Dockerfile promises to
    build on. Keyed by its inputs, so a change to them makes a new one."""
    key = hashlib.sha256(f"{SUITE} minbase {PACKAGES}".encode()).hexdigest()[:16]
    tag = f"localhost/bfstream-test-base:{key}"
    if podman("image", "exists", tag, check=False).returncode == 0:
        return tag
    tarball = cache_dir() / f"debian-{SUITE}-{key}.tar"
    if not tarball.is_file():
        partial = tarball.with_suffix(f".{uuid.uuid4().hex[:8]}.part")
        made = subprocess.run(
            ["mmdebstrap", "--quiet", "--format=tar", "--variant=minbase", f"--include={PACKAGES}", SUITE,
             str(partial)],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if made.returncode != 0:
            partial.unlink(missing_ok=True)
            raise AssertionError(f"mmdebstrap failed: {made.stderr[-3000:]}")
        partial.rename(tarball)  # whole or not at all, even with two runs at once
    podman("import", str(tarball), tag, timeout=300)
    return tag


def build_image() -> str:
    """The image of this checkout, built from its Dockerfile as a user would, on the local base."""
    tag = f"localhost/bfstream-test:{uuid.uuid4().hex[:12]}"
    podman(
        "build", "--format", "docker", "--network=host", "-v", f"{HOST_CA}:{HOST_CA}:ro",
        "--build-arg", f"BASE_IMAGE={base_image()}", "-t", tag, str(ROOT),
        timeout=600,
    )  # fmt: skip
    return tag


def remove_image(tag: str) -> None:
    podman("rmi", "--force", tag, check=False)

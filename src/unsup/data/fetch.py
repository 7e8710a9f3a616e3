"""Finding and fetching Fashion-MNIST.

Order of search: ``$UNSUP_DATA`` (or ``$UNSUP_DATA/fashion-mnist``), the Debian
package's folder, then the user cache. ``get_fashion_mnist`` installs the
Debian package when it can, else downloads the four official files and checks
their MD5 sums.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

from ..errors import UnsupError

FASHION_FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
HOW_TO_GET = (
    "Fashion-MNIST not found. Run `unsup data get fashion-mnist` (installs the Debian package "
    f"{DEBIAN_PACKAGE} as root, else downloads from {FASHION_URL}), or put the four "
    ".gz IDX files in a folder and set UNSUP_DATA to it"
)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unsup"


def candidate_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("UNSUP_DATA"):
        root = Path(os.environ["UNSUP_DATA"])
        dirs += [root / "fashion-mnist", root]
    return dirs + [DEBIAN_DIR, cache_dir() / "fashion-mnist"]


def find_fashion_mnist() -> Path:
    for d in candidate_dirs():
        if all((d / f).is_file() for f in FASHION_FILES):
            return d
    raise UnsupError(HOW_TO_GET)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def get_fashion_mnist(quiet: bool = False) -> Path:
    """Make Fashion-MNIST present; returns its folder."""
    try:
        return find_fashion_mnist()
    except UnsupError:
        pass
    if os.geteuid() == 0 and shutil.which("apt-get"):
        if not quiet:
            print(f"installing the Debian package {DEBIAN_PACKAGE} ...")
        install = ["apt-get", "install", "-y", "--no-install-recommends", DEBIAN_PACKAGE]
        done = subprocess.run(install, check=False, capture_output=True, text=True)
        if done.returncode != 0:  # a fresh machine may have no package lists yet
            subprocess.run(["apt-get", "update"], check=False, capture_output=True, text=True)
            done = subprocess.run(install, check=False, capture_output=True, text=True)
        if done.returncode == 0:
            return find_fashion_mnist()
    target = cache_dir() / "fashion-mnist"
    target.mkdir(parents=True, exist_ok=True)
    for name, md5 in FASHION_FILES.items():
        dest = target / name
        if dest.is_file() and _md5(dest) == md5:
            continue
        if not quiet:
            print(f"downloading {FASHION_URL}{name} ...")
        tmp = dest.with_suffix(".part")
        try:
            with urllib.request.urlopen(FASHION_URL + name, timeout=60) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise UnsupError(f"{HOW_TO_GET} (download failed: {e})") from None
        if _md5(tmp) != md5:
            tmp.unlink()
            raise UnsupError(f"{FASHION_URL}{name}: checksum mismatch; the download is corrupt, try again")
        tmp.replace(dest)
    return target

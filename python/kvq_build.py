"""In-tree PEP 517 build backend for the kvq Python package (no build dependencies, works offline).

    pip install ./python                                  # builds kvq too (CPU-only unless nvcc is found)
    KVQ_BUILD_DIR=build pip install ./python              # links an existing kvq build: takes seconds

build_wheel configures python/CMakeLists.txt with this interpreter, builds the kvq._C extension
(against $KVQ_BUILD_DIR, an installed kvq found by CMake, or the kvq sources one level up) and zips
the assembled package with its .dist-info. Environment: KVQ_BUILD_DIR, KVQ_JOBS (parallel build
jobs, default 2), CMAKE (the cmake binary), KVQ_CMAKE_ARGS (extra configure arguments).
"""
from __future__ import annotations

import base64
import glob
import hashlib
import io
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

NAME = "kvq"
VERSION = "0.1.0"
SUMMARY = "Paged attention over an int8-quantized KV cache (CPU and CUDA), over DLPack tensors"
HERE = os.path.dirname(os.path.abspath(__file__))

METADATA = f"""Metadata-Version: 2.1
Name: {NAME}
Version: {VERSION}
Summary: {SUMMARY}
Requires-Python: >=3.8
Provides-Extra: torch
Provides-Extra: test
Requires-Dist: numpy ; extra == "test"
Requires-Dist: pytest ; extra == "test"
Requires-Dist: torch>=2.4 ; extra == "torch"

See python/README.md of the kvq repository.
"""


def _tag():
    impl = "cp" if sys.implementation.name == "cpython" else sys.implementation.name[:2]
    ver = f"{sys.version_info.major}{sys.version_info.minor}"
    abi = f"{impl}{ver}{getattr(sys, 'abiflags', '')}"
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"{impl}{ver}", abi, plat


def _dist_info():
    return f"{NAME}-{VERSION}.dist-info"


def _find_cmake():
    """A cmake that runs. pip's isolated build hides the site-packages of the `cmake` PyPI package, so its
    PATH entry point (a Python script) fails there: try every cmake on PATH, the usual system paths and
    that package's own binary."""
    cands = [os.environ["CMAKE"]] if os.environ.get("CMAKE") else []
    for d in os.environ.get("PATH", "").split(os.pathsep):
        cands.append(os.path.join(d, "cmake"))
    cands += ["/usr/bin/cmake", "/usr/local/bin/cmake"]
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        cands += sorted(glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages", "cmake", "data", "bin",
                                               "cmake")))
    for c in cands:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            try:
                subprocess.run([c, "--version"], check=True, capture_output=True, timeout=60)
                return c
            except (OSError, subprocess.SubprocessError):
                continue
    raise RuntimeError("kvq_build: no working cmake found (tried: " + ", ".join(cands) + "); set CMAKE")


def _build_extension(build_dir):
    cmake = _find_cmake()
    package_dir = os.path.join(build_dir, "package")
    args = [cmake, "-S", HERE, "-B", build_dir, f"-DPython_EXECUTABLE={sys.executable}",
            f"-DKVQ_PY_PACKAGE_DIR={package_dir}", "-DCMAKE_BUILD_TYPE=Release"]
    if os.environ.get("KVQ_BUILD_DIR"):
        args.append(f"-DKVQ_BUILD_DIR={os.path.abspath(os.environ['KVQ_BUILD_DIR'])}")
    args += shlex.split(os.environ.get("KVQ_CMAKE_ARGS", ""))
    subprocess.check_call(args)
    subprocess.check_call([cmake, "--build", build_dir, "-j", os.environ.get("KVQ_JOBS", "2")])
    return package_dir


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


# --- PEP 517 hooks -------------------------------------------------------------------------------

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    d = os.path.join(metadata_directory, _dist_info())
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "METADATA"), "w") as f:
        f.write(METADATA)
    return _dist_info()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    py, abi, plat = _tag()
    build_dir = os.path.join(HERE, "build", f"wheel-{py}-{plat}")
    package_dir = _build_extension(build_dir)
    wheel_name = f"{NAME}-{VERSION}-{py}-{abi}-{plat}.whl"
    os.makedirs(wheel_directory, exist_ok=True)
    path = os.path.join(wheel_directory, wheel_name)
    records = []
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        root = os.path.join(package_dir, NAME)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for fn in sorted(filenames):
                if fn.endswith(".pyc"):
                    continue
                full = os.path.join(dirpath, fn)
                arc = os.path.relpath(full, package_dir).replace(os.sep, "/")
                with open(full, "rb") as f:
                    data = f.read()
                z.writestr(arc, data)
                records.append(_record_line(arc, data))
        di = _dist_info()
        wheel_meta = (f"Wheel-Version: 1.0\nGenerator: kvq_build {VERSION}\nRoot-Is-Purelib: false\n"
                      f"Tag: {py}-{abi}-{plat}\n")
        for name, text in (("METADATA", METADATA), ("WHEEL", wheel_meta)):
            data = text.encode()
            z.writestr(f"{di}/{name}", data)
            records.append(_record_line(f"{di}/{name}", data))
        records.append(f"{di}/RECORD,,")
        z.writestr(f"{di}/RECORD", "\n".join(records) + "\n")
    return wheel_name


def build_sdist(sdist_directory, config_settings=None):
    """The python/ folder alone: building it needs KVQ_BUILD_DIR or an installed kvq package."""
    base = f"{NAME}-{VERSION}"
    name = f"{base}.tar.gz"
    os.makedirs(sdist_directory, exist_ok=True)
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as t:
        for entry in ("CMakeLists.txt", "kvq_build.py", "pyproject.toml", "README.md", "src", "kvq"):
            p = os.path.join(HERE, entry)
            if os.path.exists(p):
                t.add(p, arcname=f"{base}/{entry}",
                      filter=lambda ti: None if "__pycache__" in ti.name or ti.name.endswith(".pyc") else ti)
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = METADATA.encode()
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return name


def _clean():  # pragma: no cover - a developer convenience: python kvq_build.py clean
    shutil.rmtree(os.path.join(HERE, "build"), ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] == ["clean"]:
        _clean()
    else:
        print(build_wheel(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "dist")))

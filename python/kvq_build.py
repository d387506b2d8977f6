"""In-tree PEP 517 build backend for the kvq Python package (no build dependencies, works offline).

    pip install ./python                                  # builds kvq too (CPU-only unless nvcc is found)
    KVQ_BUILD_DIR=build pip install ./python              # links an existing kvq build: takes seconds

build_wheel configures python/CMakeLists.txt with this interpreter, builds the kvq._C extension
(against $KVQ_BUILD_DIR, an installed kvq found by CMake, or the kvq sources one level up) and zips
the assembled package with its .dist-info. Environment: KVQ_BUILD_DIR, KVQ_JOBS (parallel build
jobs, default 2), CMAKE (the cmake binary), KVQ_CMAKE_ARGS (extra configure arguments).

Never a stale build:
- KVQ_BUILD_DIR may be relative: pip runs this backend inside python/, so the path is resolved
  against the caller's directory ($PWD), then the repository root, then python/ (the first that
  holds a CMake build tree wins).
- With KVQ_BUILD_DIR, `cmake --build $KVQ_BUILD_DIR --target kvq` runs first, so the wheel links a
  libkvq.a that matches the sources (a no-op when it is up to date).
- The wheel's own build dir is configured afresh whenever its inputs (KVQ_BUILD_DIR, KVQ_CMAKE_ARGS,
  the interpreter) differ from the last build's: CMake's cache would otherwise keep the old ones,
  e.g. link an earlier KVQ_BUILD_DIR. Without KVQ_BUILD_DIR, kvq's sources are built in that dir by
  CMake, which rebuilds what changed.
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


def _log(msg):
    print(f"kvq_build: {msg}", file=sys.stderr, flush=True)


def _resolve_build_dir(value, pwd=None, cwd=None):
    """The kvq build tree KVQ_BUILD_DIR names, as an absolute path. Relative paths are tried against the
    caller's directory (pwd, default $PWD: pip changes the working directory to python/ but leaves
    $PWD as it was), the repository root, and cwd (default: the working directory); the first that
    holds a CMakeCache.txt wins."""
    if os.path.isabs(value):
        return os.path.normpath(value)
    bases = [pwd if pwd is not None else os.environ.get("PWD", ""), os.path.dirname(HERE),
             cwd if cwd is not None else os.getcwd()]
    tried = []
    for base in bases:
        if not base:
            continue
        p = os.path.normpath(os.path.join(base, value))
        if p in tried:
            continue
        tried.append(p)
        if os.path.isfile(os.path.join(p, "CMakeCache.txt")):
            return p
    raise RuntimeError(f"kvq_build: KVQ_BUILD_DIR={value}: no kvq build tree (CMakeCache.txt) at "
                       + ", ".join(tried) + "; build kvq first (tools/build.sh, or cmake -S . -B build && "
                       "cmake --build build --target kvq) or give an absolute path")


def _configure_args(cmake, build_dir, package_dir, kvq_build_dir, extra_args):
    # KVQ_BUILD_DIR is always passed (empty: none), so a value cached by an earlier build never sticks.
    return [cmake, "-S", HERE, "-B", build_dir, f"-DPython_EXECUTABLE={sys.executable}",
            f"-DKVQ_PY_PACKAGE_DIR={package_dir}", "-DCMAKE_BUILD_TYPE=Release",
            f"-DKVQ_BUILD_DIR={kvq_build_dir}"] + list(extra_args)


def _reset_if_reconfigured(build_dir, args):
    """Wipes build_dir when it was configured with other arguments than args (CMake's cache keeps old
    values that the new command line does not override); records args. True when it wiped."""
    stamp = os.path.join(build_dir, "kvq_build.args")
    wiped = False
    if os.path.isdir(build_dir):
        try:
            with open(stamp) as f:
                same = f.read() == "\n".join(args)
        except OSError:
            same = False
        if not same:
            shutil.rmtree(build_dir)
            wiped = True
    os.makedirs(build_dir, exist_ok=True)
    with open(stamp, "w") as f:
        f.write("\n".join(args))
    return wiped


def _build_extension(build_dir):
    cmake = _find_cmake()
    jobs = os.environ.get("KVQ_JOBS", "2")
    package_dir = os.path.join(build_dir, "package")
    kvq_build_dir = _resolve_build_dir(os.environ["KVQ_BUILD_DIR"]) if os.environ.get("KVQ_BUILD_DIR") else ""
    args = _configure_args(cmake, build_dir, package_dir, kvq_build_dir,
                           shlex.split(os.environ.get("KVQ_CMAKE_ARGS", "")))
    if _reset_if_reconfigured(build_dir, args):
        _log(f"new build inputs: configuring {build_dir} afresh")
    if kvq_build_dir:
        _log(f"linking the kvq build {kvq_build_dir}; bringing its libkvq.a up to date first")
        subprocess.check_call([cmake, "--build", kvq_build_dir, "--target", "kvq", "-j", jobs])
    else:
        _log(f"no KVQ_BUILD_DIR: an installed kvq package if CMake finds one, else the sources in "
             f"{os.path.dirname(HERE)} (CPU-only unless nvcc is found)")
    subprocess.check_call(args)
    subprocess.check_call([cmake, "--build", build_dir, "-j", jobs])
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

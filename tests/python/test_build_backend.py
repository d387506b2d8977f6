"""python/kvq_build.py, the package's build backend: where a relative KVQ_BUILD_DIR points (pip runs the
backend inside python/), and that a build dir configured with other inputs is configured afresh (so
`pip install ./python` never links an earlier KVQ_BUILD_DIR's library from CMake's cache)."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def kb():
    spec = importlib.util.spec_from_file_location("kvq_build", os.path.join(ROOT, "python", "kvq_build.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_tree(path):
    os.makedirs(path, exist_ok=True)
    open(os.path.join(path, "CMakeCache.txt"), "w").close()
    return path


def test_relative_build_dir_is_the_callers(kb, tmp_path):
    caller = tmp_path / "caller"
    make_tree(str(caller / "build"))
    python_dir = tmp_path / "python"  # where pip runs the backend
    python_dir.mkdir()
    assert kb._resolve_build_dir("build", pwd=str(caller), cwd=str(python_dir)) == str(caller / "build")


def test_relative_build_dir_falls_back_to_the_repository_root(kb, tmp_path, monkeypatch):
    monkeypatch.setattr(kb, "HERE", str(tmp_path / "repo" / "python"))
    make_tree(str(tmp_path / "repo" / "build-x"))
    got = kb._resolve_build_dir("build-x", pwd=str(tmp_path / "elsewhere"), cwd=str(tmp_path / "repo" / "python"))
    assert got == str(tmp_path / "repo" / "build-x")


def test_absolute_build_dir_is_kept(kb, tmp_path):
    assert kb._resolve_build_dir(str(tmp_path / "b" / ".." / "b")) == str(tmp_path / "b")


def test_missing_build_dir_names_the_variable_and_the_places_tried(kb, tmp_path):
    with pytest.raises(RuntimeError) as e:
        kb._resolve_build_dir("nope", pwd=str(tmp_path / "a"), cwd=str(tmp_path / "c"))
    msg = str(e.value)
    assert "KVQ_BUILD_DIR=nope" in msg and str(tmp_path / "a" / "nope") in msg and str(tmp_path / "c" / "nope") in msg


def test_build_dir_is_always_passed_so_no_cached_value_sticks(kb):
    args = kb._configure_args("cmake", "/b", "/b/package", "", [])
    assert "-DKVQ_BUILD_DIR=" in args  # empty: CMake's cached value is overwritten, not kept
    assert "-DKVQ_BUILD_DIR=/k" in kb._configure_args("cmake", "/b", "/b/package", "/k", ["-DX=1"])


def test_other_inputs_configure_afresh(kb, tmp_path):
    b = str(tmp_path / "wheel")
    first = kb._configure_args("cmake", b, b + "/package", "/k", [])
    assert kb._reset_if_reconfigured(b, first) is False  # nothing to wipe yet
    open(os.path.join(b, "CMakeCache.txt"), "w").write("KVQ_BUILD_DIR:PATH=/k\n")
    assert kb._reset_if_reconfigured(b, first) is False  # same inputs: kept (incremental)
    assert os.path.exists(os.path.join(b, "CMakeCache.txt"))
    plain = kb._configure_args("cmake", b, b + "/package", "", [])
    assert kb._reset_if_reconfigured(b, plain) is True  # KVQ_BUILD_DIR dropped: the old cache goes
    assert not os.path.exists(os.path.join(b, "CMakeCache.txt"))
    assert kb._reset_if_reconfigured(b, kb._configure_args("cmake", b, b + "/package", "", ["-DKVQ_CUDA=OFF"]))

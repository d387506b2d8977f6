"""pytest setup for the kvq Python tests: numpy inputs run the CPU backend everywhere; the torch
and CUDA tests (test_torch_cuda.py) skip with their reason where torch or a GPU is missing.

kvq must be importable: tests/python/run.sh builds the extension against a kvq build tree and puts
the package on PYTHONPATH."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_report_header(config):
    try:
        import kvq

        return (f"kvq {kvq.__version__} from {os.path.dirname(kvq.__file__)}; cuda_built={kvq.cuda_built()} "
                f"cuda_available={kvq.cuda_available()}")
    except Exception as e:  # noqa: BLE001 - the header only reports
        return f"kvq not importable: {e} (build it with tests/python/run.sh <kvq build dir>)"


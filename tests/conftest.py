import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    has_gpu = torch.cuda.is_available()
    try:
        import tensorrt  # noqa: F401

        has_trt = True
    except ImportError:
        has_trt = False
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (run tools/run_gpu_tests.sh on the device)"))
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(pytest.mark.skip(reason="needs the full TensorRT python package (import tensorrt failed)"))


@pytest.fixture
def rng():
    """A fresh generator per test, seeded from the environment when reproducing a failure."""
    seed = int(os.environ.get("SPARSETRT_TEST_SEED", torch.seed() % (2**31)))
    print(f"SPARSETRT_TEST_SEED={seed}")
    return torch.Generator().manual_seed(seed)

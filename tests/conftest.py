import os

import pytest
import torch

FULL_GRID = os.environ.get("TORCH_FLASHINFER_FULL_GRID") == "1"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

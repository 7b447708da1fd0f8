import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETDEF = os.path.join(ROOT, "netdef")
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def netdef_dir():
    return NETDEF


@pytest.fixture
def data_dir():
    return DATA


@pytest.fixture
def float32_storage(monkeypatch):
    """The CPU dense CRF's float32 iterations, for checks to float precision (by default,
    on x86-64, lattice values are stored in half floats, which moves marginals by less
    than 1e-2; see test_crf_ops.test_half_storage_close_to_float32)."""
    monkeypatch.setenv("DEEPLAB_CRF_STORAGE", "float32")

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

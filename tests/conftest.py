import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not available")
    return SHARED


@pytest.fixture
def kidney_patches(shared_dir) -> Path:
    path = shared_dir / "data" / "kidney-patches"
    if not path.is_dir():
        pytest.skip("kidney patches not available")
    return path

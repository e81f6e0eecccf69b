"""Shared fixtures. `../shared` sits beside the checkout on every machine and in CI."""
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    assert SHARED.is_dir(), f"{SHARED} is missing: ../shared must sit beside the checkout"
    return SHARED


@pytest.fixture(scope="session")
def maps_dir(shared_dir) -> Path:
    return shared_dir / "maps" / "ENSTDkAm"


@pytest.fixture(scope="session")
def asap_dir(shared_dir) -> Path:
    return shared_dir / "asap"

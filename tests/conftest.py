"""Fixtures shared by the test modules: the ``../shared`` data folder and a seeded rng."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-shared",
        action="store_true",
        help="fail, instead of skipping, the tests that need ../shared when it is absent",
    )


@pytest.fixture(scope="session")
def shared_dir(request: pytest.FixtureRequest) -> Path:
    """``../shared/data``; skips the test when absent unless ``--require-shared`` was given."""
    data = SHARED / "data"
    if not data.is_dir():
        if request.config.getoption("--require-shared"):
            pytest.fail(f"--require-shared was given but {data} does not exist")
        pytest.skip(f"{data} is absent (only developer machines and CI have it)")
    return data


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)

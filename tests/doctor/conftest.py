from __future__ import annotations

import pytest

from . import TEST_KEY


@pytest.fixture
def sim_api_key() -> str:
    """Doctor tests search their output for their own key."""
    return TEST_KEY

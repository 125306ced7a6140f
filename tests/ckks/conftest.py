import pytest
from ckks_support import make_federation


@pytest.fixture(scope="module")
def federation():
    """A 3-of-5 committee on the small insecure ring, CRS ceremony already run."""
    return make_federation()

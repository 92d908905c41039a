import pytest

from aw_support import Broker


@pytest.fixture(scope="module")
def broker():
    b = Broker()
    yield b
    b.stop()

"""The fault tests use the same real services as the integration tests."""

from tests.integration.conftest import services  # noqa: F401  (fixture)

"""Test suite: unit tests, integration tests and shared helpers (synthetic data, reference implementations)."""

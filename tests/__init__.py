"""rein's tests: test_*.py modules, shared fixtures in conftest.py, and the helper modules they import."""

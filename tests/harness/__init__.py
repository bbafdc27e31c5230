"""Test harness helpers (real-kernel VM runner). See tests/kernel/README.md."""

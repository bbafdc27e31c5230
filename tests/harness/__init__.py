"""Test harness helpers: the real-kernel VM runner (vm.py, see
tests/kernel/README.md), BTF extracted from kernel images (vmlinuz.py) and
synthetic BTF for pure tests (btf_bytes.py)."""

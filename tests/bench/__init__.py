"""The benchmark of issue 15: enforcer against no agent, empty BPF-LSM programs
and fapolicyd, side by side in one real-kernel VM run.

Not part of the test suite (no test_*.py here, so pytest collects nothing);
run it with ``.venv/bin/python -m tests.bench`` from the repository root
(``--help``; docs/performance.md says what it measures and how).

Modules: ``results`` (the JSON shape, pure), ``report`` (targets and the
markdown tables, pure), ``policygen`` (the large policy, pure), ``stats``
(medians and spread, pure), ``guest`` (runs inside the VM), ``bpfctl``,
``emptylsm``, ``fapolicyd`` and ``startup_phases`` (used by ``guest``),
``__main__`` (the host side).
"""

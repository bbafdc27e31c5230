"""enforcer: deny container-escape and defence-evasion techniques in the kernel."""

__version__ = "0.1.0"

"""loadtester: HTTP load generator that remembers every run."""
__version__ = "0.1.0"

"""loadtester: HTTP load generator that remembers every run."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("loadtester")          # the one version: pyproject.toml's
except PackageNotFoundError:                       # a source tree that was never installed
    __version__ = "0+unknown"

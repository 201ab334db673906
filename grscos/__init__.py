"""gr-scos: an IEEE 802.15.22.3 (SCOS) spectrum sensor on GNU Radio."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gr-scos")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

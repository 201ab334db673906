"""gr-scos: an IEEE 802.15.22.3 (SCOS) spectrum sensor on GNU Radio."""


def __getattr__(name: str) -> str:
    # importlib.metadata costs ~30 ms to import: a runner process, started for every
    # task, never asks for the version.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gr-scos")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"

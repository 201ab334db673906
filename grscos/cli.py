"""The ``gr-scos`` command line."""

import argparse
import logging
import sys
from pathlib import Path

from gnuradio.scos.calibration import CalibrationError
from gnuradio.scos.windows import WINDOW_NAMES

from . import __version__, selftest
from .measurement import ChainSettings

logger = logging.getLogger("grscos")


def _selftest(arguments: argparse.Namespace) -> int:
    settings = ChainSettings(
        frequency=arguments.frequency,
        sample_rate=arguments.sample_rate,
        fft_size=arguments.fft_size,
        nffts=arguments.nffts,
        window=arguments.window,
        calibration_file=arguments.calibration or "",
    )
    if not 0 < abs(arguments.tone_bin) < arguments.fft_size // 2:
        raise ValueError(f"--tone-bin must be within +/-{arguments.fft_size // 2 - 1} and not 0")
    checks = selftest.run(
        Path(arguments.out),
        settings,
        arguments.tone_power,
        arguments.tone_bin,
        arguments.noise_figure,
    )
    for check in checks:
        print(check)
    print(f"SigMF recordings in {arguments.out}")
    failed = [check for check in checks if not check.passed]
    if failed:
        print(
            f"selftest FAILED: {len(failed)} of {len(checks)} checks out of tolerance",
            file=sys.stderr,
        )
        return 1
    print(f"selftest passed: {len(checks)} checks")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gr-scos", description="IEEE 802.15.22.3 (SCOS) spectrum sensor"
    )
    parser.add_argument("--version", action="version", version=f"gr-scos {__version__}")
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser(
        "selftest",
        help="measure a simulated tone and noise floor through the SCOS detectors and check them",
    )
    check.add_argument(
        "--out", default="selftest", help="directory for the SigMF recordings (default: ./selftest)"
    )
    check.add_argument("--frequency", type=float, default=700e6, help="centre frequency in Hz")
    check.add_argument("--sample-rate", type=float, default=14e6, help="sample rate in S/s")
    check.add_argument("--fft-size", type=int, default=1024)
    check.add_argument("--nffts", type=int, default=300)
    check.add_argument("--window", default="flattop", choices=WINDOW_NAMES)
    check.add_argument("--tone-power", type=float, default=-60.0, help="tone power in dBm")
    check.add_argument(
        "--tone-bin", type=int, default=100, help="tone offset from the centre, in FFT bins"
    )
    check.add_argument(
        "--noise-figure", type=float, default=5.0, help="noise figure in dB without calibration"
    )
    check.add_argument(
        "--calibration", help="calibration file; the simulator then uses its gain and noise figure"
    )
    check.set_defaults(handler=_selftest)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=arguments.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return arguments.handler(arguments)
    except (ValueError, CalibrationError, OSError) as error:
        print(f"gr-scos {arguments.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

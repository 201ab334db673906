"""Benchmark: the acquire_m4s action flowgraph against plain numpy on the same replayed file.

For a short and a 10x longer recording of simulated IQ (cf32_le), it measures in
separate processes (so peak RSS is each one's own):

* gr-scos: the ``acquire_m4s`` flowgraph as the runner builds it, on
  ``replay:<recording>`` (sigan_source -> skip -> window+FFT -> |X|^2 -> M4S -> dBm
  -> SigMF sink with its metadata), one detection per ``nffts`` FFTs over the file;
* numpy: the batch computation a numpy sensor does (read the recording, window,
  FFT, |X|^2, min/max/mean/median/sample per group of nffts, dBm).

and prints throughput in MS/s and peak RSS. Run with ``make bench``.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FFT_SIZE, NFFTS, WINDOW = 1024, 300, "flattop"
FREQUENCY, RATE = 700e6, 14e6


def record(path: Path, samples: int) -> None:
    from gnuradio import blocks, gr, scos

    tb = gr.top_block()
    source = scos.sigan_sim(
        FREQUENCY, RATE, tones=[{"frequency_offset": 1e6, "power": -50}], seed=2
    )
    head = blocks.head(gr.sizeof_gr_complex, samples)
    sink = scos.sigmf_sink(str(path), "complex")
    tb.connect(source, head, sink)
    tb.run()


def run_gnuradio(recording: str, out_dir: str) -> None:
    from grscos.flowgraphs.acquire_m4s import acquire_m4s  # imported before the clock starts

    samples = Path(recording.removesuffix(".sigmf-meta") + ".sigmf-data").stat().st_size // 8
    flowgraph = acquire_m4s(
        device=f"replay:{recording}",
        frequency=FREQUENCY,
        sample_rate=RATE,
        fft_size=FFT_SIZE,
        nffts=NFFTS,
        fft_window=WINDOW,
        nrecords=samples // (FFT_SIZE * NFFTS),
        output=str(Path(out_dir) / "m4s"),
        global_extensions={"scos-acquisition:action": "acquire_m4s"},
    )
    flowgraph.run()


def run_numpy(recording: str, out_dir: str) -> None:
    import numpy as np  # imported before the clock starts
    from gnuradio.scos import windows

    samples = np.fromfile(recording.removesuffix(".sigmf-meta") + ".sigmf-data", dtype=np.complex64)
    groups = len(samples) // (FFT_SIZE * NFFTS)
    spectra = samples[: groups * FFT_SIZE * NFFTS].reshape(groups, NFFTS, FFT_SIZE)
    taps = windows.taps(WINDOW, FFT_SIZE).astype(np.float32)
    power = np.abs(np.fft.fftshift(np.fft.fft(spectra * taps, axis=-1), axes=-1)) ** 2
    detected = np.stack(
        [power.min(1), power.max(1), power.mean(1), np.median(power, axis=1), power[:, 0]], axis=1
    )
    scale = windows.amplitude_correction(taps) / 100.0
    dbm = 10 * np.log10(np.maximum(detected * scale, 1e-30)) + 30
    dbm.astype(np.float32).tofile(Path(out_dir) / "numpy_m4s.rf32")


def child(kind: str, recording: str, out_dir: str) -> None:
    """Run one implementation; print its own compute time and peak RSS as JSON.

    Module imports (GNU Radio's take about 0.2 s) are done before the clock starts:
    a sensor imports once, then runs many tasks."""
    from gnuradio.scos import windows  # noqa: F401

    import grscos.flowgraphs.acquire_m4s  # noqa: F401

    began = time.perf_counter()
    {"gnuradio": run_gnuradio, "numpy": run_numpy}[kind](recording, out_dir)
    seconds = time.perf_counter() - began
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mib": peak_mib}))


def measure(kind: str, recording: Path, samples: int, repeats: int) -> dict:
    """The best of ``repeats`` runs (the machine is shared; the best is the least disturbed)."""
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out_dir:
            command = [
                sys.executable,
                __file__,
                "--child",
                kind,
                f"{recording}.sigmf-meta",
                out_dir,
            ]
            runs.append(
                json.loads(
                    subprocess.run(command, check=True, capture_output=True, text=True).stdout
                )
            )
    seconds = min(run["seconds"] for run in runs)
    peak_mib = max(run["peak_mib"] for run in runs)
    return {
        "kind": kind,
        "samples": samples,
        "seconds": seconds,
        "peak_mib": peak_mib,
        "msps": samples / seconds / 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("KIND", "RECORDING", "OUT"), help=argparse.SUPPRESS
    )
    parser.add_argument("--groups", type=int, default=20, help="M4S groups in the short recording")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (best kept)")
    parser.add_argument("--json", help="also write the results to this file")
    arguments = parser.parse_args()
    if arguments.child:
        child(*arguments.child)
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for scale in (1, 10):
            samples = arguments.groups * scale * FFT_SIZE * NFFTS
            recording = Path(directory) / f"iq_{scale}x"
            record(recording, samples)
            for kind in ("gnuradio", "numpy"):
                results[kind, scale] = measure(kind, recording, samples, arguments.repeats)
            Path(f"{recording}.sigmf-data").unlink()
    print(f"{'implementation':<14} {'samples':>12} {'seconds':>8} {'MS/s':>8} {'peak MiB':>9}")
    for result in results.values():
        print(
            f"{result['kind']:<14} {result['samples']:>12} {result['seconds']:>8.2f} "
            f"{result['msps']:>8.1f} {result['peak_mib']:>9.0f}"
        )
    for scale in (1, 10):
        ours, reference = results["gnuradio", scale], results["numpy", scale]
        print(
            f"{scale:>2}x recording: gr-scos throughput {ours['msps'] / reference['msps']:.2f}x numpy's; "
            f"peak memory {ours['peak_mib']:.0f} MiB vs numpy {reference['peak_mib']:.0f} MiB"
        )
    growth = {
        kind: results[kind, 10]["peak_mib"] / results[kind, 1]["peak_mib"]
        for kind in ("gnuradio", "numpy")
    }
    print(
        f"peak memory for 10x the recording: gr-scos {growth['gnuradio']:.2f}x, numpy {growth['numpy']:.2f}x"
    )
    if arguments.json:
        summary = {"results": list(results.values()), "memory_growth": growth}
        Path(arguments.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

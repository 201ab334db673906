"""GNU Radio Companion integration of the gr-scos blocks.

* Every ``grc/*.block.yml`` loads into GRC's own Platform without schema warnings and
  sits in the "SCOS" category tree.
* Each GRC block generates a constructor call that matches the Python block: every
  constructor parameter is exposed by keyword with the Python default, the ports
  have the Python block's item sizes, callbacks name real methods, and the asserts
  reject nonsense sizes.
* ``tests/data/all_blocks.grc`` (every scos block in one flowgraph) compiles with
  ``grcc`` and the generated program runs, writing valid SigMF recordings.
"""

import ast
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pmt
import pytest
import sigmf
import yaml
from gnuradio import blocks, gr, scos

REPO = Path(__file__).resolve().parents[1]
GRC_DIR = REPO / "grc"
FLOWGRAPH = REPO / "tests" / "data" / "all_blocks.grc"

CATEGORIES = {
    "sigan_source": "Sources",
    "sigan_sim": "Sources",
    "skip_after_tune": "Conditioning",
    "step_tuner": "Conditioning",
    "sigmf_source": "Sources",
    "m4s_detector": "Detectors",
    "time_domain_detector": "Detectors",
    "calibrate": "Calibration",
    "sigmf_sink": "Sinks",
}
DETECTORS = 5  # min, max, mean, median, sample
ITEM_SIZES = {"complex": 8, "float": 4}


# --- the block descriptions ---------------------------------------------------------


def test_block_files_and_tree_cover_every_block():
    files = {path.name for path in GRC_DIR.glob("*.block.yml")}
    assert files == {f"scos_{name}.block.yml" for name in CATEGORIES}
    tree = yaml.safe_load((GRC_DIR / "scos.tree.yml").read_text())
    assert list(tree) == ["[SCOS]"]
    listed = {
        block_id: category
        for entry in tree["[SCOS]"]
        for category, block_ids in entry.items()
        for block_id in block_ids
    }
    assert listed == {f"scos_{name}": category for name, category in CATEGORIES.items()}
    for name in CATEGORIES:
        data = yaml.safe_load((GRC_DIR / f"scos_{name}.block.yml").read_text())
        assert data["file_format"] == 1
        assert data["id"] == f"scos_{name}"
        assert data["templates"]["imports"] == "from gnuradio import scos"
        assert data["templates"]["make"].lstrip().startswith(f"scos.{name}(")
        assert len(data.get("documentation", "").strip()) > 40, f"{name}: no documentation"


def test_grc_loads_every_block_into_the_scos_tree(grc):
    platform, messages = grc
    complaints = [message for message in messages if "scos" in message]
    assert not complaints, "GRC complained while loading:\n" + "\n".join(complaints)
    for name, category in CATEGORIES.items():
        block_id = f"scos_{name}"
        assert block_id in platform.blocks, f"{block_id} not known to GRC"
        block = platform.blocks[block_id]
        # A stale installed copy later on the block path would win over the repo's.
        assert Path(block.loaded_from).parent == GRC_DIR, block.loaded_from
        assert block.category == ["SCOS", category]


# --- each GRC block against its Python block ----------------------------------------


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """A tiny complex and a tiny real SigMF recording for sigmf_source."""
    folder = tmp_path_factory.mktemp("recordings")
    paths = {}
    for kind, datatype, dtype in (
        ("complex", "cf32_le", np.complex64),
        ("float", "rf32_le", np.float32),
    ):
        base = folder / kind
        np.arange(64, dtype=dtype).tofile(f"{base}.sigmf-data")
        meta = {
            "global": {"core:datatype": datatype, "core:sample_rate": 1e6, "core:version": "1.2.0"},
            "captures": [{"core:sample_start": 0, "core:frequency": 1e9}],
            "annotations": [],
        }
        Path(f"{base}.sigmf-meta").write_text(json.dumps(meta))
        paths[kind] = str(base)
    return paths


def _place(platform, name: str, values: dict):
    """A scos block in a fresh flowgraph, with ``values`` set, rewritten and validated."""
    flowgraph = platform.make_flow_graph()
    block = flowgraph.new_block(f"scos_{name}")
    assert block is not None, f"GRC cannot make scos_{name}"
    block.params["id"].set_value(f"{name}_0")
    for key, value in values.items():
        assert key in block.params, f"scos_{name} has no parameter {key!r}"
        block.params[key].set_value(value)
    flowgraph.rewrite()
    flowgraph.validate()
    return block


def _errors(block) -> list[str]:
    # Standalone blocks have unconnected ports; everything else is a real error.
    return [message for message in block.get_error_messages() if "not connected" not in message]


def _make_call(block) -> ast.Call:
    code = block.templates.render("make").strip()
    call = ast.parse(code, mode="eval").body
    assert isinstance(call, ast.Call), code
    return call


@pytest.mark.parametrize("name", sorted(CATEGORIES))
def test_every_constructor_parameter_is_exposed_with_its_default(grc, name):
    platform, _ = grc
    call = _make_call(_place(platform, name, {}))
    assert ast.unparse(call.func) == f"scos.{name}"
    assert not call.args, "parameters must be passed by keyword"
    passed = {keyword.arg: keyword.value for keyword in call.keywords}
    signature = inspect.signature(getattr(scos, name).__init__)
    expected = [parameter for parameter in signature.parameters if parameter != "self"]
    assert list(passed) == expected
    for key, parameter in signature.parameters.items():
        if key == "self" or parameter.default is inspect.Parameter.empty:
            continue
        value = ast.literal_eval(passed[key])
        assert value == parameter.default, f"{name}.{key}: GRC default {value!r}"
        assert type(value) is type(parameter.default) or isinstance(parameter.default, float)


CASES = {
    "sigan_source": ("sigan_source", {"sim_tones": '[{"frequency_offset": 1e5, "power": -30}]'}),
    "sigan_sim": ("sigan_sim", {"tones": '[{"frequency_offset": 1e5, "power": -30}]'}),
    "skip_after_tune": ("skip_after_tune", {"nskip": "10"}),
    "step_tuner": (
        "step_tuner",
        {"frequencies": "[1e9, 2e9]", "sample_rate": "[1e6, 2e6]", "duration_ms": "2"},
    ),
    "sigmf_source_complex": ("sigmf_source", {"path": "{complex}", "repeat": "True"}),
    "sigmf_source_float": ("sigmf_source", {"path": "{float}", "output_type": "float"}),
    "m4s_detector": ("m4s_detector", {"fft_size": "16", "nffts": "3"}),
    "time_domain_detector": ("time_domain_detector", {"window_size": "8", "nwindows": "4"}),
    "calibrate_iq": ("calibrate", {"mode": "iq"}),
    "calibrate_dbm": (
        "calibrate",
        {"mode": "dbm", "vlen": "5 * 16", "fft_size": "16", "window": "blackman-harris"},
    ),
    "sigmf_sink_complex": ("sigmf_sink", {"path": "{out}/iq"}),
    "sigmf_sink_float": (
        "sigmf_sink",
        {
            "path": "{out}/td",
            "input_type": "float",
            "vlen": "10",
            "detection": '{"domain": "time", "window_size": 4, "nwindows": 2}',
            "global_extensions": '{"scos-sensor:sensor": {"id": "x"}}',
        },
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_generated_block_matches_the_python_block(grc, recordings, tmp_path, case):
    platform, _ = grc
    name, values = CASES[case]
    values = {
        key: value.format(out=tmp_path, **recordings) if key == "path" else value
        for key, value in values.items()
    }
    block = _place(platform, name, values)
    assert not _errors(block), _errors(block)
    code = block.templates.render("make").strip()
    python_block = eval(code, {"scos": scos})  # the code grcc would generate

    for ports, signature in (
        (block.sinks, python_block.input_signature()),
        (block.sources, python_block.output_signature()),
    ):
        streams = [port for port in ports if port.domain == "stream"]
        assert signature.max_streams() == len(streams), code
        for index, port in enumerate(streams):
            assert port.dtype in ITEM_SIZES
            assert ITEM_SIZES[port.dtype] * port.vlen == signature.sizeof_stream_item(index), (
                f"{case}: GRC port {port.dtype} x {port.vlen} vs Python "
                f"{signature.sizeof_stream_item(index)} bytes"
            )
    messages = {
        "in": [port.key for port in block.sinks if port.domain == "message"],
        "out": [port.key for port in block.sources if port.domain == "message"],
    }
    if isinstance(python_block, gr.hier_block2):
        # A hier block does not list the message inputs it forwards; ask for each.
        forwarded = [
            key for key in messages["in"] if python_block.message_port_is_hier_in(pmt.intern(key))
        ]
        assert (forwarded, messages["out"]) == (messages["in"], []), case
    else:
        assert messages == _message_ports(python_block), case
    for callback in block.templates.render("callbacks"):
        eval(f"python_block.{callback}", {"python_block": python_block})


def _message_ports(python_block) -> dict[str, list[str]]:
    """The message ports a Python block (or hier block) registered, less GNU Radio's
    own ``system`` port of every block."""
    ports = {
        "in": pmt.to_python(python_block.message_ports_in()) or [],
        "out": pmt.to_python(python_block.message_ports_out()) or [],
    }
    return {side: sorted(set(names) - {"system"}) for side, names in ports.items()}


def test_port_types_follow_the_parameters(grc):
    platform, _ = grc
    m4s = _place(platform, "m4s_detector", {"fft_size": "256"})
    assert (m4s.sinks[0].vlen, m4s.sources[0].vlen) == (256, 5 * 256)
    detector = _place(platform, "time_domain_detector", {"nwindows": "7"})
    assert (detector.sinks[0].dtype, detector.sources[0].dtype) == ("complex", "float")
    assert detector.sources[0].vlen == 5 * 7
    iq = _place(platform, "calibrate", {"mode": "iq", "vlen": "9"})
    assert [(port.dtype, port.vlen) for port in iq.sinks + iq.sources] == [("complex", 1)] * 2
    dbm = _place(platform, "calibrate", {"mode": "dbm", "vlen": "9"})
    assert [(port.dtype, port.vlen) for port in dbm.sinks + dbm.sources] == [("float", 9)] * 2
    sink = _place(platform, "sigmf_sink", {"path": "x", "input_type": "float", "vlen": "6"})
    assert (sink.sinks[0].dtype, sink.sinks[0].vlen, sink.sources) == ("float", 6, [])
    assert "vlen=1" in _place(platform, "sigmf_sink", {"path": "x", "vlen": "6"}).templates.render(
        "make"
    )


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("m4s_detector", {"fft_size": "0"}),
        ("m4s_detector", {"nffts": "-1"}),
        ("time_domain_detector", {"window_size": "0"}),
        ("time_domain_detector", {"nwindows": "0"}),
        ("calibrate", {"mode": "dbm", "vlen": "0"}),
        ("calibrate", {"sample_rate": "0"}),
        ("sigan_source", {"sample_rate": "-1e6"}),
        ("sigan_source", {"channel": "-1"}),
        ("sigan_sim", {"sample_rate": "-1e6"}),
        ("skip_after_tune", {"nskip": "-1"}),
        ("step_tuner", {"nskip": "-1"}),
        ("step_tuner", {"retune_timeout": "0"}),
        ("calibrate", {"mode": "dbm", "fft_size": "8", "window": "triangle"}),
        ("sigmf_sink", {"path": "x", "input_type": "float", "vlen": "0"}),
        ("sigmf_sink", {"path": "x", "detection": '{"domain": "time"}'}),
    ],
)
def test_asserts_reject_bad_parameters(grc, name, values):
    platform, _ = grc
    errors = _errors(_place(platform, name, values))
    assert any("Assertion" in message for message in errors), errors


# --- the all-blocks flowgraph, compiled with grcc and run ---------------------------


def _flowgraph_data() -> dict:
    return yaml.safe_load(FLOWGRAPH.read_text())


def _variables(data: dict) -> dict:
    """The flowgraph's variable blocks, evaluated (they may refer to each other)."""
    pending = {b["name"]: b["parameters"]["value"] for b in data["blocks"] if b["id"] == "variable"}
    values: dict = {}
    while pending:
        progress = False
        for name, expression in list(pending.items()):
            try:
                values[name] = eval(str(expression), {}, dict(values))
            except NameError:
                continue
            del pending[name]
            progress = True
        assert progress, f"cannot evaluate variables {pending}"
    return values


def _block_param(data: dict, block_id: str, key: str) -> str:
    (block,) = [b for b in data["blocks"] if b["id"] == block_id]
    return block["parameters"][key]


def test_flowgraph_uses_every_block_and_validates_in_grc(open_grc):
    data = _flowgraph_data()
    used = {block["id"] for block in data["blocks"]}
    # The step tuner needs a retunable source and ends the flowgraph itself: the
    # stepped-IQ action flowgraph runs it (tests/test_flowgraphs.py, test_acquire.py).
    assert {f"scos_{name}" for name in CATEGORIES} - used == {"scos_step_tuner"}
    assert data["options"]["parameters"]["generate_options"] == "no_gui"
    open_grc(FLOWGRAPH)


def _make_replay_recording(base: Path, samples: int) -> None:
    top = gr.top_block()
    source = scos.sigan_sim(frequency=2.5e9, sample_rate=1e6, start_time=1.6e9, seed=7)
    head = blocks.head(gr.sizeof_gr_complex, samples)
    sink = scos.sigmf_sink(path=str(base), input_type="complex")
    top.connect(source, head, sink)
    top.run()
    assert sink.recordings == [f"{base}.sigmf-meta"]


def _annotations(meta: dict, annotation_type: str) -> list[dict]:
    return [a for a in meta["annotations"] if a.get("scos-core:annotation_type") == annotation_type]


def test_all_blocks_flowgraph_compiles_with_grcc_and_runs(tmp_path, grcc):
    data = _flowgraph_data()
    variables = _variables(data)
    fft_size, nffts = variables["fft_size"], variables["nffts"]
    window_size, nwindows = variables["window_size"], variables["nwindows"]
    nsamples, center = variables["nsamples"], variables["center_freq"]
    (tone,) = ast.literal_eval(_block_param(data, "scos_sigan_sim", "tones"))

    replay = tmp_path / "replay_source"
    _make_replay_recording(replay, 3000)

    env = dict(os.environ, GRC_BLOCKS_PATH=str(GRC_DIR), HOME=str(tmp_path / "home"))
    program = grcc(FLOWGRAPH, tmp_path / "build")
    source = program.read_text()
    # The fixture turns GNU Radio's exception catching off, so a block that raises
    # in work() aborts the program instead of ending the flowgraph quietly.
    assert "catch_exceptions=False" in source

    out = tmp_path / "out"
    ran = subprocess.run(
        [sys.executable, str(program), "--replay-path", str(replay), "--out-dir", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = f"exit {ran.returncode}\nstdout:\n{ran.stdout}\nstderr:\n{ran.stderr}"
    assert ran.returncode == 0, report
    assert "Traceback" not in ran.stderr, report

    names = ("iq", "m4s", "td", "replay")
    expected = {f"{name}.sigmf-{part}" for name in names for part in ("meta", "data")}
    assert {path.name for path in out.iterdir()} == expected, report
    metas = {}
    for name in names:
        sigmf.fromfile(str(out / f"{name}.sigmf-meta")).validate()
        metas[name] = json.loads((out / f"{name}.sigmf-meta").read_text())

    # Branch C: calibrated IQ, every sample of the head.
    iq = metas["iq"]
    assert iq["global"]["core:datatype"] == "cf32_le"
    assert (out / "iq.sigmf-data").stat().st_size == nsamples * 8
    assert iq["captures"][0]["core:frequency"] == center

    # Branch A: M4S detector vectors of 5 * fft_size dBm values per nffts spectra.
    m4s = metas["m4s"]
    assert m4s["global"]["core:datatype"] == "rf32_le"
    groups = nsamples // (fft_size * nffts)
    detected = np.fromfile(out / "m4s.sigmf-data", dtype="<f4")
    assert detected.size == groups * DETECTORS * fft_size
    spectra = detected.reshape(groups, DETECTORS, fft_size)
    assert np.isfinite(spectra).all()
    frequency = _annotations(m4s, "FrequencyDomainDetection")
    assert len(frequency) == groups * DETECTORS
    assert {a["core:sample_count"] for a in frequency} == {fft_size}
    assert [a["core:sample_start"] for a in frequency] == list(range(0, detected.size, fft_size))
    first = frequency[0]
    assert first["scos-algorithm:number_of_ffts"] == nffts
    assert first["scos-algorithm:number_of_samples_in_fft"] == fft_size
    # The tone comes out at its power and frequency: the FFT's window, shift and the
    # calibrate block's window correction agree.
    mean = spectra[:, 2].mean(axis=0)
    peak = int(np.argmax(mean))
    peak_hz = (
        first["scos-algorithm:frequency_start"] + peak * first["scos-algorithm:frequency_step"]
    )
    assert (
        abs(peak_hz - (center + tone["frequency_offset"]))
        <= 2 * first["scos-algorithm:frequency_step"]
    )
    assert mean[peak] == pytest.approx(tone["power"], abs=0.5)

    # Branch B: time-domain detector vectors of 5 * nwindows dBm values.
    td = metas["td"]
    records = nsamples // (window_size * nwindows)
    detected = np.fromfile(out / "td.sigmf-data", dtype="<f4")
    assert detected.size == records * DETECTORS * nwindows
    windows = detected.reshape(records, DETECTORS, nwindows)
    time = _annotations(td, "TimeDomainDetection")
    assert len(time) == records * DETECTORS
    assert {a["core:sample_count"] for a in time} == {nwindows}
    assert {a["scos-algorithm:number_of_samples"] for a in time} == {window_size}
    # Mean power per window: the tone (plus, now and then, the weaker burst).
    assert np.all(np.abs(windows[:, 2] - tone["power"]) < 1.0), windows[:, 2]

    # The second chain replays the recording sample for sample, with its capture.
    assert (out / "replay.sigmf-data").read_bytes() == Path(f"{replay}.sigmf-data").read_bytes()
    original = json.loads(Path(f"{replay}.sigmf-meta").read_text())
    assert metas["replay"]["captures"] == original["captures"]
    assert metas["replay"]["global"]["core:sample_rate"] == original["global"]["core:sample_rate"]

"""SCOS SigMF validation: recordings written by the real sink pass; broken metadata is
rejected with the JSON path of the problem."""

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from gnuradio import blocks, gr, scos
from gnuradio.scos import tags
from gnuradio.scos.calibration import CalibrationTable
from gnuradio.scos.tags import make_tag
from jsonschema import Draft202012Validator

from grscos import sigmf_validation
from grscos.sensor import default_file, load_sensor
from grscos.sigmf_validation import (
    SigMFValidationError,
    annotation_types,
    schema_uri,
    schemas,
    validate_metadata,
    validate_recording,
)

START = tags.RadioTime(1_790_000_000, 0.5)
FREQUENCY, RATE = 700e6, 1e6
FFT_SIZE, NFFTS = 16, 4
WINDOW_SIZE, NWINDOWS = 50, 4


def calibration_state() -> dict:
    table = CalibrationTable.from_file(default_file("calibration.yaml"))
    return table.lookup(FREQUENCY, RATE)


def stream_tags(time_jump_at: int | None = None) -> list:
    found = [
        make_tag(0, "rx_time", START),
        make_tag(0, "rx_freq", FREQUENCY),
        make_tag(0, "rx_rate", RATE),
        make_tag(0, "scos_calibration", calibration_state()),
        make_tag(0, "scos_sensor", {"overload_sigan": False, "gain_setting_sigan": 20.0}),
        make_tag(1, "scos_sensor", {"overload_sigan": True}),
    ]
    if time_jump_at is not None:  # an overflow: 1000 samples lost
        found.append(make_tag(time_jump_at, "rx_time", START.plus(time_jump_at / RATE + 1e-3)))
    return found


def global_extensions() -> dict:
    return {
        "scos-sensor:sensor": load_sensor(),
        "scos-sensor:calibration_datetime": "2026-01-01T00:00:00Z",
        "scos-acquisition:action": "acquire_m4s_700",
        "scos-acquisition:schedule_entry": {
            "id": "m4s-700",
            "name": "m4s-700",
            "action": "acquire_m4s_700",
            "start": "2026-09-21T12:00:00Z",
            "interval": 60,
            "is_active": True,
            "priority": 10,
            "created": "2026-09-21T11:59:00.123Z",
            "modified": "2026-09-21T11:59:00.123Z",
            "owner": "admin",
        },
        "scos-acquisition:task": 7,
        "scos-acquisition:start_time": "2026-09-21T12:00:00.000001Z",
        "scos-acquisition:end_time": "2026-09-21T12:00:01Z",
        "scos-acquisition:archive_path": "/var/lib/gr-scos/data/m4s-700-7.sigmf",
        "scos-algorithm:anti_aliasing_filter": {
            "filter_type": "FIR",
            "FIR_coefficients": [0.25, 0.5, 0.25],
            "cutoff_attenuation": 3.0,
            "cutoff_frequency": 4e5,
        },
        "ntia-core:classification": "UNCLASSIFIED",
    }


def run(source, sink) -> str:
    top = gr.top_block()
    top.connect(source, sink)
    top.run()
    (path,) = sink.recordings
    return path


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("recordings")
    rng = np.random.default_rng(7)
    iq = (rng.normal(size=4000) + 1j * rng.normal(size=4000)).astype(np.complex64)
    made = {}
    source = blocks.vector_source_c(iq.tolist(), False, 1, stream_tags(time_jump_at=2000))
    sink = scos.sigmf_sink(str(directory / "iq"), "complex", global_extensions=global_extensions())
    made["iq"] = run(source, sink)

    vlen = 5 * FFT_SIZE
    vectors = rng.normal(-100, 3, (3, vlen)).astype(np.float32)
    detection = {
        "domain": "frequency",
        "fft_size": FFT_SIZE,
        "nffts": NFFTS,
        "window": "flattop",
        "reference": "antenna terminal",
    }
    source = blocks.vector_source_f(vectors.ravel().tolist(), False, vlen, stream_tags())
    sink = scos.sigmf_sink(
        str(directory / "m4s"), "float", vlen, detection, global_extensions=global_extensions()
    )
    made["m4s"] = run(source, sink)

    vlen = 5 * NWINDOWS
    vectors = rng.normal(-90, 3, (2, vlen)).astype(np.float32)
    detection = {
        "domain": "time",
        "window_size": WINDOW_SIZE,
        "nwindows": NWINDOWS,
        "reference": "antenna terminal",
    }
    source = blocks.vector_source_f(vectors.ravel().tolist(), False, vlen, stream_tags())
    sink = scos.sigmf_sink(
        str(directory / "time"), "float", vlen, detection, global_extensions=global_extensions()
    )
    made["time"] = run(source, sink)
    return made


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as meta:
        return json.load(meta)


def data_of(meta_path: str) -> bytes:
    return Path(meta_path.removesuffix(".sigmf-meta") + ".sigmf-data").read_bytes()


def index_of(meta: dict, annotation_type: str | None) -> int:
    return next(
        index
        for index, annotation in enumerate(meta["annotations"])
        if annotation.get("scos-core:annotation_type") == annotation_type
    )


def rejected(meta: dict) -> str:
    with pytest.raises(SigMFValidationError) as caught:
        validate_metadata(meta)
    assert isinstance(caught.value, ValueError)
    return str(caught.value)


# --- the schemas themselves -----------------------------------------------------------


def test_schemas_are_valid_draft_2020_12():
    assert set(schemas()) == {
        "scos-core",
        "scos-sensor",
        "scos-algorithm",
        "scos-acquisition",
        "ntia-core",
    }
    for namespace, schema in schemas().items():
        Draft202012Validator.check_schema(schema)
        assert schema["$id"] == schema_uri(namespace)


def test_every_reference_resolves():
    references = []

    def walk(node, namespace):
        if isinstance(node, dict):
            if "$ref" in node:
                references.append((namespace, node["$ref"]))
            for value in node.values():
                walk(value, namespace)
        elif isinstance(node, list):
            for value in node:
                walk(value, namespace)

    for namespace, schema in schemas().items():
        walk(schema, namespace)
    assert references
    for namespace, reference in references:
        document, _, pointer = reference.partition("#")
        target = schemas()[document.removesuffix(".schema.json") if document else namespace]
        for part in pointer.strip("/").split("/"):
            target = target[part]
        assert isinstance(target, dict), reference


def test_property_name_lists_match_the_properties():
    """Each namespace-keyed $def restricts its own prefix to exactly its properties."""
    for namespace, schema in schemas().items():
        for name, definition in schema["$defs"].items():
            names = definition.get("propertyNames")
            if names is None:
                continue
            own = sorted(key for key in definition["properties"] if key.startswith(namespace))
            listed = [
                key
                for option in names.get("anyOf", [])
                for key in option.get("enum", [])
                if key.startswith(namespace)
            ]
            assert sorted(listed) == own, f"{namespace} $defs/{name}"


def test_annotation_types_of_annex_a():
    assert sorted(annotation_types()) == [
        "AntennaAnnotation",
        "CalibrationAnnotation",
        "DigitalFilterAnnotation",
        "FrequencyDomainDetection",
        "SensorAnnotation",
        "TimeDomainDetection",
    ]


# --- recordings from the sink pass ------------------------------------------------------


@pytest.mark.parametrize("kind", ["iq", "m4s", "time"])
def test_sink_recordings_validate(recordings, kind):
    meta = validate_recording(recordings[kind])
    assert meta == load(recordings[kind])
    header = meta["global"]
    assert header["scos-sensor:sensor"]["sensor_spec"]["id"] == "gr-scos-sim"
    declared = {extension["name"] for extension in header["core:extensions"]}
    assert declared == {
        "scos-core",
        "scos-sensor",
        "scos-acquisition",
        "scos-algorithm",
        "ntia-core",
    }
    found = {annotation.get("scos-core:annotation_type") for annotation in meta["annotations"]}
    expected = {
        "iq": {"CalibrationAnnotation", "SensorAnnotation", None},  # None: the overflow gap
        "m4s": {"CalibrationAnnotation", "SensorAnnotation", "FrequencyDomainDetection"},
        "time": {"CalibrationAnnotation", "SensorAnnotation", "TimeDomainDetection"},
    }
    assert found == expected[kind]


def test_other_annotation_types_validate(recordings):
    meta = load(recordings["iq"])
    meta["annotations"] += [
        {
            "core:sample_start": 0,
            "core:sample_count": 10,
            "scos-core:annotation_type": "AntennaAnnotation",
            "scos-core:id": "sim-antenna-1",
            "scos-core:azimuth_angle": 90.0,
            "scos-core:elevation_angle": -5.0,
        },
        {
            "core:sample_start": 0,
            "core:sample_count": 10,
            "scos-core:annotation_type": "DigitalFilterAnnotation",
            "scos-algorithm:filter_type": "IIR",
            "scos-algorithm:IIR_numerator_coefficients": [1.0, 0.5],
            "scos-algorithm:IIR_denominator_coefficients": [1.0, -0.2],
        },
        {
            "core:sample_start": 0,
            "core:sample_count": 10,
            "scos-core:annotation_type": "SensorAnnotation",
            "scos-sensor:rf_path_index": 0,
            "scos-sensor:latitude": -33.9,
            "scos-sensor:longitude": 151.2,
            "scos-sensor:altitude": 40,
            "scos-sensor:speed": 12.5,
            "scos-sensor:bearing": 359.5,
            "scos-sensor:gps_nmea": "$GPGGA,...",
        },
    ]
    validate_metadata(meta)


def test_namespaces_without_schema_pass_when_declared(recordings):
    meta = load(recordings["iq"])
    meta["global"]["core:extensions"].append({"name": "acme", "version": "1", "optional": True})
    meta["global"]["acme:anything"] = {"x": 1}
    meta["captures"][0]["acme:tilt"] = 3
    validate_metadata(meta)


# --- broken metadata is rejected with the JSON path ---------------------------------------


def drop(key):
    def mutate(annotation):
        del annotation[key]

    return mutate


def assign(key, value):
    def mutate(target):
        target[key] = value

    return mutate


# (recording, annotation type of the annotation to break or None for global, mutation,
#  expected message with {i} for the annotation index)
ANNOTATION_CASES = {
    "missing FFT count": (
        "m4s",
        "FrequencyDomainDetection",
        drop("scos-algorithm:number_of_ffts"),
        "annotations[{i}].scos-algorithm:number_of_ffts: required",
    ),
    "missing window": (
        "m4s",
        "FrequencyDomainDetection",
        drop("scos-algorithm:window"),
        "annotations[{i}].scos-algorithm:window: required",
    ),
    "missing samples per window": (
        "time",
        "TimeDomainDetection",
        drop("scos-algorithm:number_of_samples"),
        "annotations[{i}].scos-algorithm:number_of_samples: required",
    ),
    "FFT count as a string": (
        "m4s",
        "FrequencyDomainDetection",
        assign("scos-algorithm:number_of_ffts", "4"),
        'annotations[{i}].scos-algorithm:number_of_ffts: must be an integer, got "4"',
    ),
    "FFT count not whole": (
        "m4s",
        "FrequencyDomainDetection",
        assign("scos-algorithm:number_of_ffts", 2.5),
        "annotations[{i}].scos-algorithm:number_of_ffts: must be an integer, got 2.5",
    ),
    "wrong detection domain": (
        "m4s",
        "FrequencyDomainDetection",
        assign("scos-algorithm:detection_domain", "time"),
        'annotations[{i}].scos-algorithm:detection_domain: must be "frequency", got "time"',
    ),
    "non-finite time": (
        "time",
        "TimeDomainDetection",
        assign("scos-algorithm:time_start", math.nan),
        "annotations[{i}].scos-algorithm:time_start: must be a finite number, got nan",
    ),
    "unknown scos key in a calibration annotation": (
        "iq",
        "CalibrationAnnotation",
        assign("scos-sensor:gain_sigann", 30.0),
        "annotations[{i}].scos-sensor:gain_sigann: unknown key: not a property of "
        "CalibrationAnnotation",
    ),
    "calibration key in a detection": (
        "m4s",
        "FrequencyDomainDetection",
        assign("scos-sensor:gain_sigan", 30.0),
        "annotations[{i}].scos-sensor:gain_sigan: unknown key: not a property of "
        "FrequencyDomainDetection (it belongs to CalibrationAnnotation)",
    ),
    "detection key without annotation type": (
        "iq",
        None,
        assign("scos-algorithm:detector", "fft_mean_power"),
        "annotations[{i}].scos-algorithm:detector: unknown key here: only annotations of "
        "type FrequencyDomainDetection or TimeDomainDetection carry it",
    ),
    "calibration value as a string": (
        "iq",
        "CalibrationAnnotation",
        assign("scos-sensor:gain_sigan", "30 dB"),
        'annotations[{i}].scos-sensor:gain_sigan: must be a finite number, got "30 dB"',
    ),
    "overload as a string": (
        "iq",
        "SensorAnnotation",
        assign("scos-sensor:overload_sigan", "yes"),
        'annotations[{i}].scos-sensor:overload_sigan: must be true or false, got "yes"',
    ),
    "latitude out of range": (
        "iq",
        "SensorAnnotation",
        assign("scos-sensor:latitude", 91.0),
        "annotations[{i}].scos-sensor:latitude: must be <= 90, got 91.0",
    ),
    "unknown annotation type": (
        "m4s",
        "FrequencyDomainDetection",
        assign("scos-core:annotation_type", "FrequencyDomainDetections"),
        'annotations[{i}].scos-core:annotation_type: unknown annotation type "FrequencyDomainDetections"',
    ),
    "annotation type a list": (
        "iq",
        "SensorAnnotation",
        assign("scos-core:annotation_type", ["SensorAnnotation"]),
        'annotations[{i}].scos-core:annotation_type: must be a string, got ["SensorAnnotation"]',
    ),
    "annotation type not a string": (
        "iq",
        "SensorAnnotation",
        assign("scos-core:annotation_type", 5),
        "annotations[{i}].scos-core:annotation_type: must be a string, got 5",
    ),
}


@pytest.mark.parametrize("case", ANNOTATION_CASES, ids=list(ANNOTATION_CASES))
def test_broken_annotations_are_rejected(recordings, case):
    kind, annotation_type, mutate, expected = ANNOTATION_CASES[case]
    meta = load(recordings[kind])
    index = index_of(meta, annotation_type)
    mutate(meta["annotations"][index])
    assert expected.format(i=index) in rejected(meta)


GLOBAL_CASES = {
    "sensor without antenna id": (
        lambda header: header["scos-sensor:sensor"]["antenna"]["antenna_spec"].pop("id"),
        "global.scos-sensor:sensor.antenna.antenna_spec.id: required",
    ),
    "sensor with an unknown property": (
        lambda header: header["scos-sensor:sensor"]["signal_analyzer"].update(bandwidth=1e6),
        "global.scos-sensor:sensor.signal_analyzer.bandwidth: unknown property",
    ),
    "sensor with a numeric polarization": (
        lambda header: header["scos-sensor:sensor"]["antenna"].update(polarization=45),
        "global.scos-sensor:sensor.antenna.polarization: must be a string, got 45",
    ),
    "A/D bits not whole": (
        lambda header: header["scos-sensor:sensor"]["signal_analyzer"].update(a2d_bits=11.5),
        "global.scos-sensor:sensor.signal_analyzer.a2d_bits: must be an integer, got 11.5",
    ),
    "unknown scos key": (
        assign("scos-acquisition:operator", "alice"),
        "global.scos-acquisition:operator: unknown key: scos-acquisition defines no such "
        "global property",
    ),
    "scos-core key in global": (
        assign("scos-core:sensor", {}),
        "global.scos-core:sensor: unknown key",
    ),
    "unknown ntia-core key": (
        assign("ntia-core:classification_reason", "none"),
        "global.ntia-core:classification_reason: unknown key",
    ),
    "datetime with a space": (
        assign("scos-acquisition:start_time", "2026-09-21 12:00:00"),
        "global.scos-acquisition:start_time: must be an ISO 8601 UTC datetime",
    ),
    "datetime with an offset": (
        assign("scos-sensor:calibration_datetime", "2026-01-01T02:00:00+02:00"),
        "global.scos-sensor:calibration_datetime: must be an ISO 8601 UTC datetime",
    ),
    "datetime that does not exist": (
        assign("scos-acquisition:end_time", "2026-02-30T12:00:00Z"),
        "global.scos-acquisition:end_time: must be an ISO 8601 UTC datetime",
    ),
    "classification as a number": (
        assign("ntia-core:classification", 3),
        "global.ntia-core:classification: must be a string, got 3",
    ),
    "task id as a string": (
        assign("scos-acquisition:task", "7"),
        'global.scos-acquisition:task: must be an integer, got "7"',
    ),
    "schedule entry without created": (
        lambda header: header["scos-acquisition:schedule_entry"].pop("created"),
        "global.scos-acquisition:schedule_entry.created: required",
    ),
    "schedule entry with a bad start": (
        lambda header: header["scos-acquisition:schedule_entry"].update(start="now"),
        "global.scos-acquisition:schedule_entry.start: must be an ISO 8601 UTC datetime",
    ),
    "filter coefficient not a number": (
        lambda header: header["scos-algorithm:anti_aliasing_filter"].update(
            FIR_coefficients=[0.25, "half", 0.25]
        ),
        "global.scos-algorithm:anti_aliasing_filter.FIR_coefficients[1]: must be a finite number",
    ),
    "undeclared namespace without schema": (
        assign("acme:anything", 1),
        "global.acme:anything: namespace acme is not declared in global.core:extensions",
    ),
}


@pytest.mark.parametrize("case", GLOBAL_CASES, ids=list(GLOBAL_CASES))
def test_broken_global_objects_are_rejected(recordings, case):
    mutate, expected = GLOBAL_CASES[case]
    meta = load(recordings["m4s"])
    mutate(meta["global"])
    assert expected in rejected(meta)


def test_undeclared_namespace_is_rejected_once_with_its_first_use(recordings):
    meta = load(recordings["m4s"])
    meta["global"]["core:extensions"] = [
        extension
        for extension in meta["global"]["core:extensions"]
        if extension["name"] != "scos-algorithm"
    ]
    first = next(
        index
        for index, annotation in enumerate(meta["annotations"])
        if any(key.startswith("scos-algorithm:") for key in annotation)
    )
    with pytest.raises(SigMFValidationError) as caught:
        validate_metadata(meta)
    undeclared = [line for line in caught.value.errors if "not declared" in line]
    # global.scos-algorithm:anti_aliasing_filter comes first; one report per namespace.
    assert undeclared == [
        "global.scos-algorithm:anti_aliasing_filter: namespace scos-algorithm is not "
        "declared in global.core:extensions"
    ]
    del meta["global"]["scos-algorithm:anti_aliasing_filter"]
    with pytest.raises(SigMFValidationError) as caught:
        validate_metadata(meta)
    assert caught.value.errors[0].startswith(f"annotations[{first}].scos-algorithm:")
    assert "scos-algorithm is not declared" in caught.value.errors[0]


def test_scos_key_in_a_capture_is_rejected(recordings):
    meta = load(recordings["iq"])
    meta["captures"][1]["scos-sensor:gain_sigan"] = 30.0
    assert (
        "captures[1].scos-sensor:gain_sigan: unknown key: scos-sensor does not extend captures"
        in rejected(meta)
    )


def test_an_antenna_annotation_needs_its_id(recordings):
    meta = load(recordings["iq"])
    meta["annotations"].append(
        {"core:sample_start": 0, "scos-core:annotation_type": "AntennaAnnotation"}
    )
    index = len(meta["annotations"]) - 1
    assert f"annotations[{index}].scos-core:id: required" in rejected(meta)


def test_every_problem_is_listed(recordings):
    meta = load(recordings["m4s"])
    first, second = [
        index
        for index, annotation in enumerate(meta["annotations"])
        if annotation["scos-core:annotation_type"] == "FrequencyDomainDetection"
    ][:2]
    del meta["annotations"][first]["scos-algorithm:units"]
    meta["annotations"][second]["scos-algorithm:number_of_samples_in_fft"] = 0
    meta["global"]["ntia-core:classification"] = ""
    with pytest.raises(SigMFValidationError) as caught:
        validate_metadata(meta)
    assert caught.value.errors == [
        "global.ntia-core:classification: must not be empty",
        f"annotations[{first}].scos-algorithm:units: required",
        f"annotations[{second}].scos-algorithm:number_of_samples_in_fft: must be >= 1, got 0",
    ]


def test_the_message_is_capped_but_every_error_is_kept(recordings):
    meta = load(recordings["m4s"])
    for annotation in meta["annotations"]:
        annotation.pop("scos-algorithm:units", None)
        annotation.pop("scos-algorithm:window", None)
    with pytest.raises(SigMFValidationError) as caught:
        validate_metadata(meta)
    assert len(caught.value.errors) == 30  # 3 vectors x 5 detectors x 2 properties
    lines = str(caught.value).splitlines()
    assert lines[: sigmf_validation.MAX_REPORTED] == caught.value.errors[:20]
    assert lines[sigmf_validation.MAX_REPORTED :] == ["... and 10 more"]


def test_malformed_structure_is_reported():
    assert "global: required mapping" in rejected({"captures": [], "annotations": []})
    message = rejected({"global": {"core:extensions": {}}, "annotations": ["x"]})
    assert "global.core:extensions: must be a list" in message
    assert 'annotations[0]: must be a mapping, got "x"' in message


# --- whole recordings ----------------------------------------------------------------------


def test_recording_errors_name_the_file_and_the_path(recordings, tmp_path):
    meta = load(recordings["time"])
    index = index_of(meta, "TimeDomainDetection")
    del meta["annotations"][index]["scos-algorithm:detector"]
    broken = tmp_path / "broken.sigmf-meta"
    broken.write_text(json.dumps(meta))
    (tmp_path / "broken.sigmf-data").write_bytes(data_of(recordings["time"]))
    with pytest.raises(SigMFValidationError) as caught:
        validate_recording(broken)
    assert str(caught.value) == (
        f"{broken}: annotations[{index}].scos-algorithm:detector: required"
    )


def test_sigmf_checks_run_too(recordings, tmp_path):
    meta = load(recordings["time"])
    copy_ = tmp_path / "copy.sigmf-meta"
    copy_.write_text(json.dumps(meta))
    data = data_of(recordings["time"])
    (tmp_path / "copy.sigmf-data").write_bytes(data[:-4] + b"\x00\x00\x80\x7f")
    with pytest.raises(SigMFValidationError, match=re.escape(f"{copy_}: sigmf: ")):
        validate_recording(copy_)


def test_sigmf_core_problems_are_reported(recordings, tmp_path):
    meta = copy.deepcopy(load(recordings["iq"]))
    meta["captures"][0]["core:sample_start"] = -1  # core keys are sigmf's to check
    validate_metadata(meta)
    path = tmp_path / "core.sigmf-meta"
    path.write_text(json.dumps(meta))
    (tmp_path / "core.sigmf-data").write_bytes(data_of(recordings["iq"]))
    expected = f"{path}: sigmf: captures[0].core:sample_start: -1 is less than the minimum of 0"
    with pytest.raises(SigMFValidationError, match=re.escape(expected)):
        validate_recording(path)


def test_unreadable_recordings(tmp_path):
    with pytest.raises(SigMFValidationError, match=re.escape("missing.sigmf-meta: cannot read")):
        validate_recording(tmp_path / "missing.sigmf-meta")
    bad = tmp_path / "bad.sigmf-meta"
    bad.write_text("{not json")
    with pytest.raises(SigMFValidationError, match=re.escape("bad.sigmf-meta: not valid JSON")):
        validate_recording(bad)


def test_sigmf_warnings_count_as_errors(recordings, tmp_path):
    meta = load(recordings["iq"])
    meta["annotations"].append({"core:sample_start": 10**9, "core:sample_count": 1})
    validate_metadata(meta)  # nothing for the SCOS schemas to object to
    path = tmp_path / "short.sigmf-meta"
    path.write_text(json.dumps(meta))
    (tmp_path / "short.sigmf-data").write_bytes(data_of(recordings["iq"]))
    with pytest.raises(SigMFValidationError, match="Data source ends before the final annotation"):
        validate_recording(path)

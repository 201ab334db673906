"""Sensor definition and location files: the packaged defaults load, and every kind of
broken file is reported with the file, the field and the reason."""

import fnmatch
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest
import yaml
from gnuradio.scos.calibration import CalibrationTable

from grscos.sensor import ConfigError, default_file, load_location, load_sensor
from grscos.sigmf_validation import schema_errors, schema_uri

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, document, name: str) -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


def sensor_document() -> dict:
    return yaml.safe_load(default_file("sensor.yaml").read_text())


def location_document() -> dict:
    return yaml.safe_load(default_file("location.yaml").read_text())


def reported(expected: str, errors: list[str]) -> bool:
    return any(line.startswith(expected) for line in errors)


def error_of(loader, path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loader(path)
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == "\n".join(caught.value.errors)
    return caught.value.errors


# --- the defaults ---------------------------------------------------------------------------


def test_default_sensor_loads_and_is_a_table_37_sensor():
    sensor = load_sensor()
    assert sensor == load_sensor(default_file("sensor.yaml"))
    assert sensor["sensor_spec"]["id"] == "gr-scos-sim"
    assert sensor["antenna"]["antenna_spec"]["id"]
    analyzer = sensor["signal_analyzer"]
    assert (analyzer["low_frequency"], analyzer["high_frequency"]) == (1e6, 6e9)
    assert isinstance(analyzer["low_frequency"], float)  # "1e6" is read as a number
    assert {"noise_figure", "max_power", "a2d_bits"} <= set(analyzer)
    assert sensor["computer_spec"]["id"]
    assert sensor["mobile"] is False
    assert schema_errors(sensor, schema_uri("scos-sensor", "Sensor")) == []


def test_default_location_loads():
    location = load_location()
    assert location == load_location(default_file("location.yaml"))
    assert -90 <= location["latitude"] <= 90
    assert -180 <= location["longitude"] <= 180
    assert location["modified"].endswith("Z")
    assert location["gps"] is False
    assert location["description"]


def test_default_calibration_covers_the_simulator():
    table = CalibrationTable.from_file(default_file("calibration.yaml"))
    assert table.reference == "antenna terminal"
    assert table.calibration_datetime.endswith("Z")
    assert set(table.properties) == {
        "gain_sigan",
        "noise_figure_sigan",
        "noise_figure_sensor",
        "1db_compression_point_sigan",
    }
    points = yaml.safe_load(default_file("calibration.yaml").read_text())["points"]
    rates = {float(point["sample_rate"]) for point in points}
    frequencies = {float(point["frequency"]) for point in points}
    assert rates == {1e6, 14e6, 28e6}
    assert min(frequencies) == 1e6 and max(frequencies) == 6e9
    # Every rate has the same grid, spanning the signal analyzer's range.
    assert len(points) == len(rates) * len(frequencies)
    for rate in (1e6, 7e6, 14e6, 20e6, 28e6):
        for frequency in (1e6, 700e6, 2.4e9, 6e9):
            values = table.lookup(frequency, rate)
            assert 20 < values["gain_sigan"] < 35
            assert values["noise_figure_sensor"] >= values["noise_figure_sigan"] > 0


def test_defaults_are_package_data():
    """The defaults and schemas are found through importlib.resources and installed."""
    package = files("grscos")
    for name in ("sensor.yaml", "location.yaml", "calibration.yaml"):
        assert package.joinpath("defaults", name).is_file()
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = data["package-data"]["grscos"]
    shipped = [
        path.relative_to(REPO / "grscos").as_posix()
        for folder in ("defaults", "schemas")
        for path in (REPO / "grscos" / folder).iterdir()
    ]
    assert shipped
    for name in shipped:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


# --- broken sensor files ---------------------------------------------------------------------


def drop(*keys):
    def mutate(document):
        target = document
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return mutate


def assign(value, *keys):
    def mutate(document):
        target = document
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


SENSOR_CASES = {
    "no antenna id": (drop("antenna", "antenna_spec", "id"), "antenna.antenna_spec.id: required"),
    "no signal analyzer": (drop("signal_analyzer"), "signal_analyzer: required"),
    "no sensor_spec": (drop("sensor_spec"), "sensor_spec: required"),
    "empty id": (assign("", "sensor_spec", "id"), "sensor_spec.id: must not be empty"),
    "A/D bits as text": (
        assign("twelve", "signal_analyzer", "a2d_bits"),
        'signal_analyzer.a2d_bits: must be an integer, got "twelve"',
    ),
    "A/D bits not whole": (
        assign(12.5, "signal_analyzer", "a2d_bits"),
        "signal_analyzer.a2d_bits: must be an integer, got 12.5",
    ),
    "mobile as text": (assign("no", "mobile"), 'mobile: must be true or false, got "no"'),
    "typo in a property": (
        assign(5.0, "signal_analyzer", "noise_figur"),
        "signal_analyzer.noise_figur: unknown property",
    ),
    "unknown top-level property": (assign("x", "location"), "location: unknown property"),
    "version as a number": (
        assign(1.0, "sensor_spec", "version"),
        "sensor_spec.version: must be a string, got 1.0",
    ),
    "negative frequency": (
        assign(-1.0, "antenna", "low_frequency"),
        "antenna.low_frequency: must be >= 0, got -1.0",
    ),
    "range upside down": (
        assign(7e9, "signal_analyzer", "low_frequency"),
        "signal_analyzer.low_frequency: 7e+09 is above high_frequency 6e+09",
    ),
    "filter list not a list": (
        assign({"filters": {"filter_spec": {"id": "f1"}}}, "preselector"),
        "preselector.filters: must be a list",
    ),
    "filter without id": (
        assign({"filters": [{"filter_spec": {}}]}, "preselector"),
        "preselector.filters[0].filter_spec.id: required",
    ),
    "filter passband upside down": (
        assign(
            {"filters": [{"low_frequency_passband": 3e9, "high_frequency_passband": 2e9}]},
            "preselector",
        ),
        "preselector.filters[0].low_frequency_passband: 3e+09 is above "
        "high_frequency_passband 2e+09",
    ),
    "short gain pattern": (
        assign([0.0] * 36, "antenna", "horizontal_gain_pattern"),
        "antenna.horizontal_gain_pattern: must have exactly 360 values, got 36",
    ),
}


@pytest.mark.parametrize("case", SENSOR_CASES, ids=list(SENSOR_CASES))
def test_broken_sensor_files(tmp_path, case):
    mutate, expected = SENSOR_CASES[case]
    document = sensor_document()
    mutate(document)
    path = write(tmp_path, document, "sensor.yaml")
    assert reported(f"{path}: {expected}", error_of(load_sensor, path))


def test_every_problem_in_a_sensor_file_is_listed(tmp_path):
    document = sensor_document()
    del document["antenna"]["antenna_spec"]["id"]
    document["signal_analyzer"]["a2d_bits"] = "many"
    path = write(tmp_path, document, "sensor.yaml")
    assert error_of(load_sensor, path) == [
        f"{path}: antenna.antenna_spec.id: required",
        f'{path}: signal_analyzer.a2d_bits: must be an integer, got "many"',
    ]


def test_non_finite_numbers_are_rejected(tmp_path):
    text = default_file("sensor.yaml").read_text()
    text = text.replace("noise_figure: 5.0", "noise_figure: .nan")
    path = write(tmp_path, text, "sensor.yaml")
    assert error_of(load_sensor, path) == [
        f"{path}: signal_analyzer.noise_figure: must be a finite number, got nan"
    ]


def test_scientific_notation_reads_as_numbers(tmp_path):
    text = "sensor_spec: {id: s}\nantenna: {antenna_spec: {id: a}, low_frequency: 14e6}\n"
    text += "signal_analyzer: {high_frequency: 6.0e9}\n"
    sensor = load_sensor(write(tmp_path, text, "sensor.yaml"))
    assert sensor["antenna"]["low_frequency"] == 14e6
    assert sensor["signal_analyzer"]["high_frequency"] == 6e9


def test_unquoted_date_gets_a_hint(tmp_path):
    document = sensor_document()
    path = write(tmp_path, yaml.safe_dump(document) + "", "sensor.yaml")
    path.write_text(path.read_text().replace("version: '1.0'", "version: 2026-01-01"))
    (message,) = error_of(load_sensor, path)
    assert message.startswith(f"{path}: sensor_spec.version: must be a string, got 2026-01-01")
    assert "quote it" in message


FILE_CASES = {
    "missing file": (None, "cannot read: No such file or directory"),
    "empty file": ("", "the file is empty; expected a mapping"),
    "comments only": ("# nothing here\n", "the file is empty; expected a mapping"),
    "a list": ("- sensor_spec: {id: x}\n", "expected a mapping at the top level, got a list"),
    "a scalar": ("just words\n", "expected a mapping at the top level, got 'just words'"),
    "malformed YAML": ("sensor_spec: {id: x\nantenna: [\n", "not valid YAML: line "),
    "bad indentation": ("sensor_spec:\n  id: x\n bad: 1\n", "not valid YAML: line 3"),
}


@pytest.mark.parametrize("loader", [load_sensor, load_location], ids=["sensor", "location"])
@pytest.mark.parametrize("case", FILE_CASES, ids=list(FILE_CASES))
def test_unusable_files(tmp_path, loader, case):
    content, expected = FILE_CASES[case]
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_text(content)
    (message,) = error_of(loader, path)
    assert message.startswith(f"{path}: {expected}")


def test_unreadable_bytes(tmp_path):
    path = tmp_path / "sensor.yaml"
    path.write_bytes(b"sensor_spec: \xff\xfe\n")
    (message,) = error_of(load_sensor, path)
    assert message.startswith(f"{path}: not UTF-8 text")


# --- broken location files -----------------------------------------------------------------

LOCATION_CASES = {
    "latitude too high": (assign(91.5, "latitude"), "latitude: must be <= 90, got 91.5"),
    "longitude too low": (assign(-180.5, "longitude"), "longitude: must be >= -180, got -180.5"),
    "latitude as text": (assign("40N", "latitude"), 'latitude: must be a finite number, got "40N"'),
    "gps as text": (assign("yes", "gps"), 'gps: must be true or false, got "yes"'),
    "altitude as text": (
        assign("1655 m", "altitude"),
        'altitude: must be a finite number, got "1655 m"',
    ),
    "latitude without longitude": (drop("longitude"), "longitude: required when latitude is given"),
    "unknown property": (assign(3, "elevation"), "elevation: unknown property"),
    "modified not ISO 8601": (
        assign("yesterday", "modified"),
        'modified: must be an ISO 8601 UTC datetime such as 2026-10-01T12:00:00Z, got "yesterday"',
    ),
    "modified with an offset": (
        assign("2026-01-01T02:00:00+02:00", "modified"),
        "modified: must be an ISO 8601 UTC datetime",
    ),
    "modified on a day that does not exist": (
        assign("2026-02-29T00:00:00Z", "modified"),
        "modified: must be an ISO 8601 UTC datetime",
    ),
    "description as a number": (assign(5, "description"), "description: must be a string, got 5"),
}


@pytest.mark.parametrize("case", LOCATION_CASES, ids=list(LOCATION_CASES))
def test_broken_location_files(tmp_path, case):
    mutate, expected = LOCATION_CASES[case]
    document = location_document()
    mutate(document)
    path = write(tmp_path, document, "location.yaml")
    assert reported(f"{path}: {expected}", error_of(load_location, path))


def test_location_properties_are_all_optional(tmp_path):
    path = write(tmp_path, {"description": "roof"}, "location.yaml")
    assert load_location(path) == {"description": "roof"}


def test_unquoted_timestamps_become_utc_strings(tmp_path):
    path = write(tmp_path, "modified: 2026-03-01T14:30:00+02:00\n", "location.yaml")
    assert load_location(path) == {"modified": "2026-03-01T12:30:00Z"}
    path = write(tmp_path, "modified: 2026-03-01T12:30:00.25Z\n", "location.yaml")
    assert load_location(path) == {"modified": "2026-03-01T12:30:00.250000Z"}


def test_timestamps_without_time_zone_are_rejected(tmp_path):
    path = write(tmp_path, "modified: 2026-03-01 12:30:00\nlatitude: 100\n", "location.yaml")
    assert error_of(load_location, path) == [
        f"{path}: modified: needs a time zone: write it in UTC, ending in Z",
        f"{path}: latitude: must be <= 90, got 100",
        f"{path}: longitude: required when latitude is given",
    ]

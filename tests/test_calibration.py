"""CalibrationTable: loading, interpolation, clamping and error reporting."""

import copy
import json
import logging
import math

import pytest
import yaml
from gnuradio.scos.calibration import CalibrationError, CalibrationTable

# Two sample rates whose frequency grids differ, so rate interpolation has to
# interpolate in frequency on each grid first.
GRID = {
    10e6: {
        1e9: {"gain_sigan": 30.0, "gain_preselector": 10.0, "noise_figure_sensor": 4.0},
        2e9: {"gain_sigan": 28.0, "gain_preselector": 12.0, "noise_figure_sensor": 5.0},
        4e9: {"gain_sigan": 22.0, "gain_preselector": 9.0, "noise_figure_sensor": 7.0},
    },
    20e6: {
        1e9: {"gain_sigan": 26.0, "gain_preselector": 11.0, "noise_figure_sensor": 4.5},
        3e9: {"gain_sigan": 24.0, "gain_preselector": 13.0, "noise_figure_sensor": 6.0},
        5e9: {"gain_sigan": 20.0, "gain_preselector": 7.0, "noise_figure_sensor": 8.0},
    },
}


def document() -> dict:
    points = [
        {"sample_rate": rate, "frequency": frequency, **values}
        for rate, row in reversed(GRID.items())
        for frequency, values in reversed(row.items())
    ]
    return {
        "calibration_datetime": "2026-10-01T12:00:00Z",
        "reference": "antenna terminal",
        "points": points,
    }


def write(tmp_path, content, name="calibration.yaml"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def linear(x, x0, x1, y0, y1):
    return y0 + (x - x0) / (x1 - x0) * (y1 - y0)


def calibration_warnings(caplog):
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and record.name.endswith("calibration")
    ]


@pytest.fixture
def table(tmp_path):
    return CalibrationTable.from_file(write(tmp_path, document()))


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ('"2026-10-01T14:30:00+02:00"', "2026-10-01T12:30:00Z"),
        ('"2026-10-01T12:30:00"', "2026-10-01T12:30:00Z"),
        ("2026-10-01T12:30:00.250Z", "2026-10-01T12:30:00.250000Z"),
    ],
)
def test_calibration_datetime_is_kept_in_utc(tmp_path, written, read):
    text = yaml.safe_dump(document()).replace('"2026-10-01T12:00:00Z"', written)
    text = text.replace("'2026-10-01T12:00:00Z'", written)
    assert CalibrationTable.from_file(write(tmp_path, text)).calibration_datetime == read


def test_unreadable_calibration_datetime_is_an_error(tmp_path):
    with pytest.raises(CalibrationError, match="calibration_datetime: not an ISO 8601 time"):
        CalibrationTable.from_file(write(tmp_path, document() | {"calibration_datetime": "soon"}))


def test_metadata_and_exact_points(table):
    assert table.calibration_datetime == "2026-10-01T12:00:00Z"
    assert table.reference == "antenna terminal"
    for rate, row in GRID.items():
        for frequency, values in row.items():
            assert table.lookup(frequency, rate) == values


def test_json_file_loads_too(tmp_path):
    path = write(tmp_path, json.dumps(document()), name="calibration.json")
    assert CalibrationTable.from_file(path).lookup(2e9, 10e6) == GRID[10e6][2e9]


def test_linear_interpolation_in_frequency(table, caplog):
    caplog.set_level(logging.WARNING)
    row = GRID[10e6]
    for frequency, (low, high) in ((1.25e9, (1e9, 2e9)), (3.5e9, (2e9, 4e9))):
        values = table.lookup(frequency, 10e6)
        assert set(values) == set(row[low])
        for name in values:
            expected = linear(frequency, low, high, row[low][name], row[high][name])
            assert values[name] == pytest.approx(expected, rel=1e-12), name
    # e.g. gain_sigan a quarter of the way from 30 dB to 28 dB
    assert table.lookup(1.25e9, 10e6)["gain_sigan"] == pytest.approx(29.5)
    assert calibration_warnings(caplog) == []


def test_interpolation_between_sample_rates(table, caplog):
    caplog.set_level(logging.WARNING)
    frequency, rate = 2.5e9, 12.5e6
    slow = {  # 10 MS/s grid: between 2 and 4 GHz
        name: linear(frequency, 2e9, 4e9, GRID[10e6][2e9][name], GRID[10e6][4e9][name])
        for name in GRID[10e6][2e9]
    }
    fast = {  # 20 MS/s grid: between 1 and 3 GHz
        name: linear(frequency, 1e9, 3e9, GRID[20e6][1e9][name], GRID[20e6][3e9][name])
        for name in GRID[20e6][1e9]
    }
    values = table.lookup(frequency, rate)
    for name in slow:
        expected = linear(rate, 10e6, 20e6, slow[name], fast[name])
        assert values[name] == pytest.approx(expected, rel=1e-12), name
    # gain_sigan: 26.5 dB at 10 MS/s, 24.5 dB at 20 MS/s -> 26.0 dB a quarter of the way
    assert values["gain_sigan"] == pytest.approx(26.0)
    assert calibration_warnings(caplog) == []


@pytest.mark.parametrize(
    ("frequency", "rate", "nearest"),
    [(0.5e9, 10e6, 1e9), (9e9, 10e6, 4e9), (0.5e9, 20e6, 1e9), (6e9, 20e6, 5e9)],
)
def test_frequency_outside_span_clamps_and_warns_once(tmp_path, caplog, frequency, rate, nearest):
    path = write(tmp_path, document())
    table = CalibrationTable.from_file(path)
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        assert table.lookup(frequency, rate) == GRID[rate][nearest]
    messages = calibration_warnings(caplog)
    assert len(messages) == 1, messages
    assert str(path) in messages[0]
    assert f"{frequency:g}" in messages[0] and "outside" in messages[0]


@pytest.mark.parametrize(("rate", "nearest"), [(5e6, 10e6), (40e6, 20e6)])
def test_rate_outside_calibrated_rates_clamps_and_warns_once(tmp_path, caplog, rate, nearest):
    path = write(tmp_path, document())
    table = CalibrationTable.from_file(path)
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        assert table.lookup(1e9, rate) == GRID[nearest][1e9]
        assert table.gain(1e9, rate) == pytest.approx(
            GRID[nearest][1e9]["gain_sigan"] + GRID[nearest][1e9]["gain_preselector"]
        )
    messages = calibration_warnings(caplog)
    assert len(messages) == 1, messages
    assert str(path) in messages[0]
    assert f"{rate:g}" in messages[0] and "outside" in messages[0]


def test_gain_is_preselector_plus_sigan(table):
    assert table.gain(2e9, 10e6) == pytest.approx(28.0 + 12.0)
    assert table.gain(1.5e9, 10e6) == pytest.approx(29.0 + 11.0)
    assert table.gain(3e9, 20e6) == pytest.approx(24.0 + 13.0)


def test_gain_without_preselector_is_sigan_alone(tmp_path):
    content = document()
    for point in content["points"]:
        del point["gain_preselector"]
    table = CalibrationTable.from_file(write(tmp_path, content))
    assert table.gain(2e9, 10e6) == pytest.approx(28.0)


def test_noise_figure_prefers_sensor_then_sigan(tmp_path, table):
    assert table.noise_figure(1.5e9, 10e6) == pytest.approx(4.5)

    both = document()
    for point in both["points"]:
        point["noise_figure_sigan"] = point["noise_figure_sensor"] - 1.5
    assert CalibrationTable.from_file(write(tmp_path, both)).noise_figure(
        2e9, 10e6
    ) == pytest.approx(5.0)

    sigan_only = document()
    for point in sigan_only["points"]:
        point["noise_figure_sigan"] = point.pop("noise_figure_sensor") - 1.5
    assert CalibrationTable.from_file(write(tmp_path, sigan_only)).noise_figure(
        2e9, 10e6
    ) == pytest.approx(3.5)

    neither = document()
    for point in neither["points"]:
        del point["noise_figure_sensor"]
    path = write(tmp_path, neither)
    with pytest.raises(CalibrationError, match="noise_figure") as caught:
        CalibrationTable.from_file(path).noise_figure(2e9, 10e6)
    assert str(path) in str(caught.value)


# --- errors ---------------------------------------------------------------------


def expect_error(tmp_path, content, *fragments):
    path = write(tmp_path, content)
    with pytest.raises(CalibrationError) as caught:
        CalibrationTable.from_file(path)
    message = str(caught.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(caught.value, ValueError)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(CalibrationError, match="cannot read calibration file") as caught:
        CalibrationTable.from_file(path)
    assert str(path) in str(caught.value)


def test_malformed_yaml(tmp_path):
    expect_error(tmp_path, "points: [ {sample_rate: 1e6, frequency: \n", "not valid YAML")


def test_not_a_mapping(tmp_path):
    expect_error(tmp_path, "- 1\n- 2\n", "mapping")


@pytest.mark.parametrize("points", [[], None, "none"])
def test_empty_or_missing_points(tmp_path, points):
    content = document()
    content["points"] = points
    expect_error(tmp_path, content, "'points' must be a non-empty list")


def test_no_points_key(tmp_path):
    content = document()
    del content["points"]
    expect_error(tmp_path, content, "'points'")


def test_unknown_top_level_key(tmp_path):
    content = document()
    content["gain"] = 3.0
    expect_error(tmp_path, content, "unknown key", "gain")


def test_unknown_point_property(tmp_path):
    content = document()
    content["points"][4]["gain_lna"] = 3.0
    expect_error(tmp_path, content, "points[4]", "unknown property", "gain_lna")


def test_point_missing_a_property(tmp_path):
    content = document()
    del content["points"][2]["gain_sigan"]
    expect_error(tmp_path, content, "points[2]", "missing", "gain_sigan")


@pytest.mark.parametrize("key", ["sample_rate", "frequency"])
def test_point_missing_its_coordinates(tmp_path, key):
    content = document()
    del content["points"][1][key]
    expect_error(tmp_path, content, "points[1]", "missing", key)


def test_point_with_property_the_first_lacks(tmp_path):
    content = document()
    content["points"][3]["enbw_sigan"] = 1.2e7
    expect_error(tmp_path, content, "points[3]", "enbw_sigan", "points[0] lacks")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("thirty", "must be a number"), (True, "must be a number"), (None, "must be a number")],
)
def test_non_numeric_value(tmp_path, value, fragment):
    content = document()
    content["points"][5]["gain_sigan"] = value
    expect_error(tmp_path, content, "points[5]", "gain_sigan", fragment)


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf"])
def test_non_finite_value(tmp_path, text):
    lines = yaml.safe_dump(document()).replace(
        "noise_figure_sensor: 8.0", f"noise_figure_sensor: {text}"
    )
    assert text in lines
    expect_error(tmp_path, lines, "noise_figure_sensor", "must be finite")


def test_non_finite_value_names_its_point(tmp_path):
    content = document()
    content["points"][1]["gain_preselector"] = math.nan
    expect_error(tmp_path, content, "points[1]", "gain_preselector", "must be finite")


def test_duplicate_rate_and_frequency(tmp_path):
    content = document()
    duplicate = copy.deepcopy(content["points"][1])
    duplicate["gain_sigan"] = 0.0
    content["points"].append(duplicate)
    index = len(content["points"]) - 1
    expect_error(
        tmp_path,
        content,
        f"points[{index}]",
        "repeats",
        f"{duplicate['sample_rate']:g}",
        f"{duplicate['frequency']:g}",
    )


def test_same_frequency_at_another_rate_is_not_a_duplicate(tmp_path):
    content = document()
    assert CalibrationTable.from_file(write(tmp_path, content)).lookup(1e9, 20e6) == GRID[20e6][1e9]


@pytest.mark.parametrize("key", ["frequency", "sample_rate"])
@pytest.mark.parametrize("value", [0.0, -1e9])
def test_non_positive_coordinates(tmp_path, key, value):
    content = document()
    content["points"][3][key] = value
    expect_error(tmp_path, content, "points[3]", f"{key} must be positive")

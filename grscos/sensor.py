"""The sensor definition and location files: loading and validation.

* The sensor definition (YAML) is the Sensor object of IEEE 802.15.22.3, Table 37,
  checked against the ``Sensor`` definition of ``schemas/scos-sensor.schema.json``.
  gr-scos publishes it unchanged in its capabilities and in every SigMF recording
  (``scos-sensor:sensor``).
* The location file (YAML) is the Location object of Table 21 (gps, modified,
  description, latitude, longitude) plus ``altitude`` in metres above mean sea level.

Both are read with :func:`gnuradio.scos.calibration.load_yaml`, which reads ``14e6``
as a number. Every problem is reported as :class:`ConfigError` naming the file, the
JSON path of the field and the reason, one per line::

    sensor.yaml: antenna.antenna_spec.id: required
    location.yaml: latitude: must be <= 90, got 91.5

Documented defaults, describing the simulated sensor, ship in ``grscos/defaults/``
(:func:`default_file`).
"""

import datetime
from importlib.resources import files
from pathlib import Path

import yaml
from gnuradio.scos.calibration import load_yaml

from .sigmf_validation import format_path, schema_errors, schema_uri

SENSOR_FILE = "sensor.yaml"
LOCATION_FILE = "location.yaml"
CALIBRATION_FILE = "calibration.yaml"

_NUMBER = {"type": "number"}
LOCATION_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "description": "Table 21 Location, plus altitude (m above mean sea level).",
    "type": "object",
    "properties": {
        "gps": {"type": "boolean"},
        "modified": {"$ref": schema_uri("scos-core", "datetime")},
        "description": {"type": "string"},
        "latitude": {**_NUMBER, "minimum": -90, "maximum": 90},
        "longitude": {**_NUMBER, "minimum": -180, "maximum": 180},
        "altitude": _NUMBER,
    },
    "additionalProperties": False,
    "dependentRequired": {
        "latitude": ["longitude"],
        "longitude": ["latitude"],
        "altitude": ["latitude", "longitude"],
    },
}


class ConfigError(ValueError):
    """A configuration file that cannot be used; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


def default_file(name: str) -> Path:
    """A file of ``grscos/defaults`` (sensor.yaml, location.yaml, calibration.yaml)."""
    return Path(str(files("grscos").joinpath("defaults", name)))


def load_sensor(path: str | Path | None = None) -> dict:
    """The Sensor object (Table 37) of a sensor definition file, validated.

    Without ``path``, the packaged default (the simulated sensor).
    """
    path = default_file(SENSOR_FILE) if path is None else Path(path)
    document = read_yaml_mapping(path)
    _raise_if(path, schema_errors(document, schema_uri("scos-sensor", "Sensor")))
    _raise_if(path, list(_range_errors(document, ())))
    return document


def load_location(path: str | Path | None = None) -> dict:
    """The Location object (Table 21, plus altitude) of a location file, validated.

    ``modified`` comes back as an ISO 8601 UTC string ending in Z even when the YAML
    wrote an unquoted timestamp. Without ``path``, the packaged default.
    """
    path = default_file(LOCATION_FILE) if path is None else Path(path)
    document = read_yaml_mapping(path)
    errors = []
    modified = document.get("modified")
    if isinstance(modified, datetime.datetime):  # YAML reads an unquoted timestamp itself
        if modified.tzinfo is None:
            errors.append((("modified",), "needs a time zone: write it in UTC, ending in Z"))
        else:
            utc = modified.astimezone(datetime.UTC).replace(tzinfo=None)
            document["modified"] = utc.isoformat() + "Z"
    rest = {key: value for key, value in document.items() if not (errors and key == "modified")}
    _raise_if(path, errors + schema_errors(rest, LOCATION_SCHEMA))
    return document


def read_yaml_mapping(path: Path) -> dict:
    """The mapping a YAML file holds; ConfigError naming the file otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: not UTF-8 text: {error.reason}"]) from None
    try:
        document = load_yaml(text)
    except yaml.YAMLError as error:
        where = ""
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError([f"{path}: not valid YAML: {where}{problem}"]) from None
    if document is None:
        raise ConfigError([f"{path}: the file is empty; expected a mapping"])
    if not isinstance(document, dict):
        kind = "a list" if isinstance(document, list) else f"{document!r}"
        raise ConfigError([f"{path}: expected a mapping at the top level, got {kind}"])
    return document


def _raise_if(path: Path, errors: list[tuple[tuple, str]]) -> None:
    if errors:
        lines = []
        for where, reason in errors:
            field = format_path(where)
            lines.append(f"{path}: {field}: {reason}" if field else f"{path}: {reason}")
        raise ConfigError(lines)


def _range_errors(node, path: tuple):
    """low_X above high_X anywhere in the object (frequency ranges, filter edges)."""
    if isinstance(node, dict):
        for key, low in node.items():
            if not isinstance(key, str) or not key.startswith("low_"):
                continue
            high_key = "high_" + key.removeprefix("low_")
            high = node.get(high_key)
            if _number(low) and _number(high) and low > high:
                yield (*path, key), f"{low:g} is above {high_key} {high:g}"
        for key, value in node.items():
            yield from _range_errors(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _range_errors(value, (*path, index))


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

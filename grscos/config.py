"""The sensor's configuration directory and what it holds.

A configuration directory (``--config DIR`` or the setting ``SCOS_CONFIG``) may
hold any of:

=====================  ================================================================
``sensor.yaml``        the sensor definition, Table 37 (``grscos.sensor``)
``location.yaml``      the location, Table 21
``calibration.yaml``   calibration data (``gnuradio.scos.calibration``)
``actions.yaml``       the actions clients may schedule (``grscos.actions.registry``)
``simulator.yaml``     the signals of the simulated signal analyzer
``flowgraphs/``        the owner's own action flowgraphs (grcc-generated ``.py``)
=====================  ================================================================

Each file that is missing comes from the documented defaults shipped with gr-scos
(the simulated sensor); the settings ``SCOS_SENSOR_FILE``, ``SCOS_ACTIONS_FILE``
... give one file a path of its own (``grscos.settings``).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib.resources import files
from pathlib import Path

from gnuradio.scos.calibration import CalibrationError, CalibrationTable

from . import sensor
from .sensor import ConfigError

ACTIONS_FILE = "actions.yaml"
SIMULATOR_FILE = "simulator.yaml"
FLOWGRAPH_DIR = "flowgraphs"
_DEFAULT_ACTIONS = ("grscos.actions", "actions.yaml")


@dataclass(frozen=True)
class Config:
    directory: Path | None = None
    files: Mapping[str, Path] = field(default_factory=dict)  # paths of their own, by name

    @classmethod
    def load(
        cls, directory: str | Path | None = None, files: Mapping[str, Path] | None = None
    ) -> "Config":
        """The configuration of ``directory`` (else the defaults), with ``files``
        (by file name, e.g. ``sensor.yaml``) taken from where they say."""
        files = dict(files or {})
        if directory is None:
            return cls(None, files)
        directory = Path(directory)
        if not directory.is_dir():
            raise ConfigError([f"configuration directory {directory} does not exist"])
        return cls(directory, files)

    def file(self, name: str) -> Path:
        """``name`` from its own path, else the configuration directory, else the
        shipped default."""
        if name in self.files:
            return self.files[name]
        if self.directory is not None and (self.directory / name).exists():
            return self.directory / name
        if name == ACTIONS_FILE:
            return Path(str(files(_DEFAULT_ACTIONS[0]).joinpath(_DEFAULT_ACTIONS[1])))
        return sensor.default_file(name)

    @cached_property
    def sensor(self) -> dict:
        return sensor.load_sensor(self.file(sensor.SENSOR_FILE))

    @property
    def sensor_id(self) -> str:
        """The sensor's id: its sensor_spec's (the Sensor object, Table 37, has none)."""
        return str(self.sensor.get("sensor_spec", {}).get("id", ""))

    @cached_property
    def location(self) -> dict:
        return sensor.load_location(self.file(sensor.LOCATION_FILE))

    @cached_property
    def calibration(self) -> CalibrationTable:
        path = self.file(sensor.CALIBRATION_FILE)
        try:
            return CalibrationTable.from_file(path)
        except CalibrationError as error:
            raise ConfigError([str(error)]) from None

    @cached_property
    def simulator(self) -> dict:
        """``{"tones": [...], "bursts": [...]}`` for the simulator, checked."""
        from gnuradio.scos.sigan_sim import check_signals

        path = self.file(SIMULATOR_FILE)
        document = sensor.read_yaml_mapping(path)
        unknown = set(document) - {"tones", "bursts"}
        if unknown:
            raise ConfigError([f"{path}: unknown key(s) {', '.join(sorted(unknown))}"])
        signals = {kind: document.get(kind) or [] for kind in ("tones", "bursts")}
        for kind, specs in signals.items():
            if not isinstance(specs, list):
                raise ConfigError([f"{path}: {kind} must be a list"])
        try:
            check_signals(**signals)
        except ValueError as error:
            raise ConfigError([f"{path}: {error}"]) from None
        return signals

    def flowgraph_dirs(self) -> list[Path]:
        if self.directory is not None and (self.directory / FLOWGRAPH_DIR).is_dir():
            return [self.directory / FLOWGRAPH_DIR]
        return []

    def frequency_range(self) -> tuple[float, float]:
        """The tunable range the sensor definition gives its signal analyzer."""
        analyzer = self.sensor.get("signal_analyzer", {})
        return (
            float(analyzer.get("low_frequency", 0.0)),
            float(analyzer.get("high_frequency", math.inf)),
        )

    def check(self) -> None:
        """Load every file now, so that a broken one fails at start-up."""
        for name in ("sensor", "location", "calibration", "simulator"):
            getattr(self, name)

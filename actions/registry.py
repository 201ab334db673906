"""Actions as the sensor owner configures them, checked before anything runs.

An actions file (YAML) lists what clients may schedule::

    actions:
      - name: acquire_m4s_700MHz          # what clients schedule
        flowgraph: acquire_m4s            # a flowgraph in grscos.flowgraphs
        summary: M4S of 10 MHz at 700 MHz # Table 22
        description: ...                  # Table 22, optional
        admin_only: false                 # hidden from non-admin users
        max_run_time: 30                  # seconds before the task is stopped
        classification: UNCLASSIFIED      # written into every recording
        parameters: {frequency: 700e6, sample_rate: 14e6, fft_size: 1024, nffts: 300}

Loading checks every parameter against the flowgraph's own parameters, the rules
in ``parameters.py`` and the hardware limits, and fails with the file, the action
and the parameter named.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from gnuradio.scos.calibration import load_yaml
from gnuradio.scos.sigan_source import SiganError, check_settings

from . import parameters

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
ACTION_KEYS = {
    "name",
    "flowgraph",
    "summary",
    "description",
    "admin_only",
    "max_run_time",
    "classification",
    "parameters",
}


class ActionError(ValueError):
    """A bad actions file, action or parameter; the message says where and why."""


@dataclass(frozen=True)
class Limits:
    """What the hardware can do, in the form of ``sigan_source.probe``: frequency and
    gain as (low, high), sample rate as (low, high) or a list of rates; None where
    unconstrained."""

    frequency: tuple[float, float] | None = None
    sample_rate: tuple[float, float] | list[float] | None = None
    gain: tuple[float, float] | None = None

    def check(self, name: str, value) -> None:
        setting = {"frequencies": "frequency", **parameters.PER_FREQUENCY}.get(name, name)
        if setting not in ("frequency", "sample_rate", "gain"):
            return
        ranges = {key: getattr(self, key) for key in ("frequency", "sample_rate", "gain")}
        ranges = {key: limit for key, limit in ranges.items() if limit is not None}
        try:
            for item in value if isinstance(value, list) else [value]:
                check_settings(ranges, **{setting: item}, where=name)
        except SiganError as error:
            raise parameters.ParameterError(str(error)) from None


@dataclass(frozen=True)
class Action:
    name: str
    flowgraph: str
    summary: str
    description: str = ""
    admin_only: bool = False
    max_run_time: float = 60.0
    classification: str = "UNCLASSIFIED"
    parameters: Mapping[str, object] = field(default_factory=dict)

    def resolve(
        self, overrides: Mapping[str, object], limits: Limits, accepted: Mapping[str, object]
    ) -> dict:
        """The action's parameters with ``overrides`` applied, each checked.

        ``accepted`` maps the flowgraph's parameters to their defaults; the result
        holds every action parameter of the flowgraph.
        """
        merged = {name: value for name, value in accepted.items() if name in parameters.RULES}
        merged.update(self.parameters)
        for name, value in overrides.items():
            if name not in accepted or name in parameters.RUNTIME_PARAMETERS:
                settable = sorted(set(accepted) & set(parameters.RULES))
                raise parameters.ParameterError(
                    f"{name}: flowgraph {self.flowgraph} has no such parameter "
                    f"(it takes {', '.join(settable)})"
                )
            merged[name] = value
        checked = {name: parameters.check(name, value) for name, value in merged.items()}
        parameters.check_together(checked)
        for name, value in checked.items():
            limits.check(name, value)
        return checked


def load_actions(
    path: str | Path, flowgraphs: Mapping[str, Mapping[str, object]], limits: Limits
) -> dict[str, Action]:
    """The actions of ``path``, keyed by name.

    ``flowgraphs`` maps each flowgraph name to its parameters and their defaults.
    """
    path = Path(path)
    try:
        document = load_yaml(path.read_text())
    except OSError as error:
        raise ActionError(f"cannot read actions file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ActionError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("actions"), list):
        raise ActionError(f"{path}: expected a mapping with an 'actions' list")
    actions: dict[str, Action] = {}
    for index, entry in enumerate(document["actions"]):
        action = _load_action(path, index, entry, flowgraphs, limits)
        if action.name in actions:
            raise ActionError(f"{path}: action {action.name!r} is defined twice")
        actions[action.name] = action
    return actions


def _load_action(path: Path, index: int, entry, flowgraphs, limits: Limits) -> Action:
    where = f"{path}: actions[{index}]"
    if not isinstance(entry, dict):
        raise ActionError(f"{where}: expected a mapping")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ActionError(
            f"{where}: name must be 1-100 letters, digits, '_', '.' or '-', got {name!r}"
        )
    where = f"{path}: action {name!r}"
    unknown = set(entry) - ACTION_KEYS
    if unknown:
        raise ActionError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    flowgraph = entry.get("flowgraph")
    if flowgraph not in flowgraphs:
        raise ActionError(
            f"{where}: flowgraph {flowgraph!r} does not exist (known: {', '.join(sorted(flowgraphs))})"
        )
    summary = entry.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        raise ActionError(f"{where}: summary is required (a short description, Table 22)")
    max_run_time = entry.get("max_run_time", 60.0)
    if (
        isinstance(max_run_time, bool)
        or not isinstance(max_run_time, int | float)
        or max_run_time <= 0
    ):
        raise ActionError(f"{where}: max_run_time must be a positive number of seconds")
    admin_only = entry.get("admin_only", False)
    if not isinstance(admin_only, bool):
        raise ActionError(f"{where}: admin_only must be true or false")
    fixed = entry.get("parameters") or {}
    if not isinstance(fixed, dict):
        raise ActionError(f"{where}: parameters must be a mapping")
    try:
        classification = parameters.check(
            "classification", entry.get("classification", "UNCLASSIFIED")
        )
        action = Action(
            name=name,
            flowgraph=flowgraph,
            summary=summary.strip(),
            description=str(entry.get("description", "")).strip(),
            admin_only=admin_only,
            max_run_time=float(max_run_time),
            classification=classification,
            parameters=dict(fixed),
        )
        for parameter in fixed:
            if parameter not in flowgraphs[flowgraph] or parameter in parameters.RUNTIME_PARAMETERS:
                raise parameters.ParameterError(
                    f"{parameter}: flowgraph {flowgraph} has no such parameter"
                )
        action.resolve({}, limits, flowgraphs[flowgraph])
    except parameters.ParameterError as error:
        raise ActionError(f"{where}: parameter {error}") from None
    return action

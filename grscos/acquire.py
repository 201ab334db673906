"""Running a configured action once: parameters, signal analyzer, metadata, flowgraph.

``acquire`` is what ``gr-scos acquire`` and the scheduler's runner do for a task:

1. find the action (``actions.yaml``) and its flowgraph, check the parameters with
   overrides against the flowgraph, the rules and the ranges of the sensor
   definition and of the signal analyzer (probed without building a flowgraph);
2. for a replay, take frequency and sample rate from the recording where the
   action and the overrides leave them open, and do not calibrate a second time;
3. build the SigMF global metadata (sensor, calibration datetime, action, schedule
   entry, task, classification, location);
4. run the flowgraph in a runner process (``grscos.scheduler.supervisor``) with the action's
   maximum run time as the deadline.
"""

import datetime
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gnuradio.scos.sigan_source import SiganError, parse_device, probe

from .actions import parameters
from .actions.flowgraphs import Flowgraph, discover
from .actions.registry import Action, ActionError, Limits, load_actions
from .config import ACTIONS_FILE, Config
from .scheduler.supervisor import RunError, RunResult, run
from .storage.models import format_utc

logger = logging.getLogger(__name__)

__all__ = ["AcquireError", "Catalog", "RunError", "acquire", "prepare"]


class AcquireError(ValueError):
    """An action that cannot run as asked; the message says which part and why."""


@dataclass(frozen=True)
class Catalog:
    """The configured actions and flowgraphs, checked against the sensor definition."""

    config: Config
    flowgraphs: dict[str, Flowgraph]
    actions: dict[str, Action]
    limits: Limits

    @classmethod
    def load(cls, config: Config) -> "Catalog":
        """Everything the sensor's configuration defines, checked against the sensor
        definition (``prepare`` checks a run against the device's ranges too)."""
        config.check()
        flowgraphs = discover(config.flowgraph_dirs())
        limits = sensor_limits(config, None)
        accepted = {name: flowgraph.parameters for name, flowgraph in flowgraphs.items()}
        actions = load_actions(config.file(ACTIONS_FILE), accepted, limits)
        return cls(config, flowgraphs, actions, limits)

    def action(self, name: str) -> Action:
        if name not in self.actions:
            raise ActionError(
                f"unknown action {name!r}; configured actions: {', '.join(sorted(self.actions))}"
            )
        return self.actions[name]


def sensor_limits(config: Config, facts: dict | None) -> Limits:
    """The ranges of the sensor definition, narrowed to the device's when known."""
    low, high = config.frequency_range()
    if facts is None:
        return Limits(frequency=(low, high))
    device_low, device_high = facts["frequency"] or (low, high)
    return Limits(
        frequency=(max(low, device_low), min(high, device_high)),
        sample_rate=facts.get("sample_rate"),
        gain=facts.get("gain"),
    )


@dataclass(frozen=True)
class Prepared:
    """An action ready to run: its checked parameters and the kind of device."""

    action: Action
    flowgraph: Flowgraph
    values: dict[str, object]
    device: str
    kind: str  # of the device: sim, replay, uhd or osmosdr


def prepare(catalog: Catalog, name: str, overrides: Mapping[str, object], device: str) -> Prepared:
    """Check action ``name`` with ``overrides`` on ``device``; AcquireError or
    ActionError (a ValueError) naming what is wrong."""
    action = catalog.action(name)
    flowgraph = catalog.flowgraphs[action.flowgraph]
    try:
        facts = probe(device)
    except SiganError as error:
        raise AcquireError(str(error)) from None
    kind = parse_device(device)[0]
    overrides = dict(overrides)
    if kind == "replay":
        overrides = _replay_defaults(action, overrides, flowgraph, facts) | overrides
    limits = sensor_limits(catalog.config, facts)
    try:
        values = action.resolve(overrides, limits, flowgraph.parameters)
    except parameters.ParameterError as error:
        where = f"replay of {device.partition(':')[2]}" if kind == "replay" else device
        raise AcquireError(f"action {name!r} on {where}: parameter {error}") from None
    return Prepared(action, flowgraph, values, device, kind)


def _replay_defaults(action: Action, overrides: dict, flowgraph: Flowgraph, facts: dict) -> dict:
    """Frequency and sample rate of the recording, where neither the action nor the
    overrides set them (a replay decides them; a value that is set must match)."""
    given = set(action.parameters) | set(overrides)
    frequency = facts["frequency"][0] if facts["frequency"] else None
    recorded = {"frequency": frequency, "sample_rate": facts["sample_rate"][0]}
    if frequency is not None:
        recorded["frequencies"] = [frequency]
    return {
        name: value
        for name, value in recorded.items()
        if name in flowgraph.parameters and name not in given
    }


def utc_now() -> str:
    return format_utc(datetime.datetime.now(datetime.UTC))


def global_metadata(
    prepared: Prepared, config: Config, schedule_entry: dict, task_id: int
) -> tuple[dict, str, str]:
    """(SigMF global keys, calibration file, reference point) for the run."""
    extensions: dict = {"scos-sensor:sensor": config.sensor}
    if prepared.kind == "replay":
        # Replayed samples are already calibrated: keep the recording's calibration.
        replayed = json.loads(Path(prepared.device.partition(":")[2]).read_text())["global"]
        calibration_datetime = replayed.get("scos-sensor:calibration_datetime")
        calibration_file, reference = "", "reference point of the replayed recording"
    else:
        table = config.calibration
        calibration_datetime = table.calibration_datetime
        calibration_file, reference = str(table.source), table.reference
    if calibration_datetime:
        extensions["scos-sensor:calibration_datetime"] = calibration_datetime
    extensions.update(
        {
            "scos-acquisition:action": prepared.action.name,
            "scos-acquisition:schedule_entry": schedule_entry,
            "scos-acquisition:task": int(task_id),
            "ntia-core:classification": prepared.action.classification,
        }
    )
    location = config.location
    if "latitude" in location:
        point = [location["longitude"], location["latitude"]]
        if "altitude" in location:
            point.append(location["altitude"])
        extensions["core:geolocation"] = {"type": "Point", "coordinates": point}
    return extensions, calibration_file, reference


def flowgraph_request(
    config: Config,
    catalog: Catalog,
    name: str,
    overrides: Mapping[str, object],
    device: str,
    output: str | Path,
    schedule_entry: dict,
    task_id: int,
) -> tuple[Prepared, dict]:
    """Action ``name`` checked and turned into what a runner process builds: the
    flowgraph's name, source and keyword arguments (``grscos.scheduler.protocol``)."""
    prepared = prepare(catalog, name, overrides, device)
    extensions, calibration_file, reference = global_metadata(
        prepared, config, schedule_entry, task_id
    )
    runtime = {
        "device": device,
        "calibration_file": calibration_file,
        "reference": reference,
        "output": str(output),
        "global_extensions": extensions,
    }
    if prepared.kind == "sim":
        runtime["sim_tones"] = config.simulator["tones"]
        runtime["sim_bursts"] = config.simulator["bursts"]
    accepted = prepared.flowgraph.parameters
    arguments = prepared.flowgraph.flowgraph_arguments(
        prepared.values | {key: value for key, value in runtime.items() if key in accepted}
    )
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    request = {
        "name": prepared.flowgraph.name,
        "source": prepared.flowgraph.source,
        "arguments": arguments,
    }
    return prepared, request


def check_recorded(name: str, result: RunResult) -> RunResult:
    if not result.recordings:
        raise RunError(
            f"action {name!r} produced no recording: the signal analyzer gave fewer samples "
            "than one record needs"
        )
    return result


def acquire(
    config: Config,
    name: str,
    overrides: Mapping[str, object],
    device: str,
    output: str | Path,
    on_event: Callable[[dict], None] | None = None,
) -> RunResult:
    """Run action ``name`` once, now, outside any schedule; its recordings are named
    after ``output`` (a path without suffix; several recordings get -000, -001, ...)."""
    now = utc_now()
    entry = {
        "id": f"acquire-{name}",
        "name": f"gr-scos acquire {name}",
        "action": name,
        "created": now,
        "modified": now,
    }
    catalog = Catalog.load(config)
    prepared, request = flowgraph_request(
        config, catalog, name, overrides, device, output, entry, 1
    )
    logger.info("running %s (%s) on %s", name, prepared.flowgraph.name, device)
    return check_recorded(name, run(request, prepared.action.max_run_time, on_event))


def recording_name(out_dir: str | Path, action: str) -> Path:
    """A new recording path in ``out_dir`` named after the action and the UTC time."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Path(out_dir) / f"{action}_{stamp}"
    candidate, number = base, 1
    while any(candidate.parent.glob(candidate.name + "*.sigmf-meta")):
        number += 1
        candidate = base.with_name(f"{base.name}_{number}")
    return candidate

"""Action configuration: loading, parameter checks and overrides, with clear errors."""

import textwrap

import pytest

from grscos.actions.parameters import ParameterError, parse_assignment
from grscos.actions.registry import ActionError, Limits, load_actions

FLOWGRAPHS = {
    "acquire_m4s": {
        "frequency": 700e6,
        "sample_rate": 14e6,
        "gain": 0.0,
        "nskip": 0,
        "fft_size": 1024,
        "nffts": 300,
        "window": "flattop",
        "device": "sim",
        "output": "",
    },
    "acquire_stepped_iq": {
        "frequencies": [700e6],
        "sample_rate": 14e6,
        "duration_ms": 10.0,
        "device": "sim",
    },
}
LIMITS = Limits(frequency=(1e6, 6e9), sample_rate=(1e5, 56e6), gain=(0.0, 76.0))


def write(tmp_path, text: str):
    path = tmp_path / "actions.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path, text: str):
    return load_actions(write(tmp_path, text), FLOWGRAPHS, LIMITS)


GOOD = """
    actions:
      - name: acquire_m4s_3555MHz
        flowgraph: acquire_m4s
        summary: M4S at 3555 MHz
        description: CBRS band centre
        admin_only: true
        max_run_time: 20
        classification: CUI
        parameters: {frequency: 3555e6, nffts: 100}
      - name: sweep
        flowgraph: acquire_stepped_iq
        summary: three channels
        parameters: {frequencies: [700e6, 750e6, 800e6]}
"""


def test_loads_actions_with_flowgraph_defaults(tmp_path):
    actions = load(tmp_path, GOOD)
    action = actions["acquire_m4s_3555MHz"]
    assert (action.flowgraph, action.admin_only, action.max_run_time, action.classification) == (
        "acquire_m4s",
        True,
        20.0,
        "CUI",
    )
    resolved = action.resolve({}, LIMITS, FLOWGRAPHS["acquire_m4s"])
    # 3555e6 is YAML 1.1's string; the loader reads it as the number it means.
    assert resolved == {
        "frequency": 3555e6,
        "sample_rate": 14e6,
        "gain": 0.0,
        "nskip": 0,
        "fft_size": 1024,
        "nffts": 100,
        "window": "flattop",
    }
    assert actions["sweep"].resolve({}, LIMITS, FLOWGRAPHS["acquire_stepped_iq"])[
        "frequencies"
    ] == [
        700e6,
        750e6,
        800e6,
    ]


def test_overrides_are_checked_like_the_file(tmp_path):
    action = load(tmp_path, GOOD)["acquire_m4s_3555MHz"]
    accepted = FLOWGRAPHS["acquire_m4s"]
    assert (
        action.resolve({"frequency": 1e9, "window": "hanning"}, LIMITS, accepted)["window"]
        == "hanning"
    )
    cases = {
        "frequency": (7e9, "7 GHz is outside the device's range 1 MHz .. 6 GHz"),
        "fft_size": (0, "whole number >= 1"),
        "window": ("kaiser", "must be one of"),
        "gain": (100.0, "outside"),
        "output": ("/tmp/x", "no such parameter"),
        "duration_ms": (5, "no such parameter"),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(ParameterError, match=message) as raised:
            action.resolve({name: value}, LIMITS, accepted)
        assert str(raised.value).startswith(name)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("actions: [", "not valid YAML"),
        ("{}", "'actions' list"),
        ("actions:\n  - {name: 'bad name', flowgraph: acquire_m4s, summary: s}", "name must be"),
        (
            "actions:\n  - {name: a, flowgraph: nope, summary: s}",
            "action 'a': flowgraph 'nope' does not exist",
        ),
        ("actions:\n  - {name: a, flowgraph: acquire_m4s}", "action 'a': summary is required"),
        (
            "actions:\n  - {name: a, flowgraph: acquire_m4s, summary: s, colour: red}",
            "unknown key(s) colour",
        ),
        (
            "actions:\n  - {name: a, flowgraph: acquire_m4s, summary: s, max_run_time: 0}",
            "max_run_time",
        ),
        (
            "actions:\n  - {name: a, flowgraph: acquire_m4s, summary: s, admin_only: yes please}",
            "admin_only",
        ),
        (
            "actions:\n  - {name: a, flowgraph: acquire_m4s, summary: s, parameters: {frequency: 9e9}}",
            "action 'a': parameter frequency: frequency 9 GHz is outside the device's range",
        ),
        (
            "actions:\n  - {name: a, flowgraph: acquire_m4s, summary: s, parameters: {nffts: many}}",
            "parameter nffts: must be a finite number",
        ),
        (
            "actions:\n  - {name: a, flowgraph: acquire_m4s, summary: s, parameters: {device: 'uhd:'}}",
            "parameter device: flowgraph acquire_m4s has no such parameter",
        ),
        (
            "actions:\n  - {name: a, flowgraph: acquire_m4s, summary: s}\n  - {name: a, flowgraph: acquire_m4s, summary: t}",
            "defined twice",
        ),
    ],
)
def test_bad_files_name_the_file_action_and_parameter(tmp_path, text, message):
    with pytest.raises(ActionError) as raised:
        load(tmp_path, text)
    assert message in str(raised.value)
    assert str(tmp_path / "actions.yaml") in str(raised.value)


def test_missing_file(tmp_path):
    with pytest.raises(ActionError, match="cannot read actions file"):
        load_actions(tmp_path / "none.yaml", FLOWGRAPHS, LIMITS)


def test_command_line_assignments():
    assert parse_assignment("frequency=3.5e9") == ("frequency", 3.5e9)
    assert parse_assignment("frequencies=[1e9, 2e9]") == ("frequencies", [1e9, 2e9])
    assert parse_assignment("window=hanning") == ("window", "hanning")
    for text in ("frequency", "=3", "frequencies=[1e9"):
        with pytest.raises(ParameterError):
            parse_assignment(text)


def test_limits_take_a_devices_discrete_rates(tmp_path):
    action = load(tmp_path, GOOD)["acquire_m4s_3555MHz"]
    rates = Limits(frequency=(1e6, 6e9), sample_rate=[2.4e6, 14e6])
    assert (
        action.resolve({"sample_rate": 2.4e6}, rates, FLOWGRAPHS["acquire_m4s"])["sample_rate"]
        == 2.4e6
    )
    with pytest.raises(
        ParameterError, match="sample_rate 10 MS/s is not one of the device's rates"
    ):
        action.resolve({"sample_rate": 10e6}, rates, FLOWGRAPHS["acquire_m4s"])

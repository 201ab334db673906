"""Every shell and Python command of README.md, against a sensor started with ``make run``.

README.md marks every fenced ```sh and ```python block with an HTML comment on the
line just before it:

``<!-- test: tour -->``
    Run by this test in README order; must exit with status 0. The first tour block is
    ``make run``: the module's ``tour`` fixture runs the real ``make run`` (in the tour's
    working directory, ``SCOS_HOME`` and ``SCOS_API_BIND`` set, ``--old-file`` on the
    set-up stamp, see ``make_run``) and waits until its API answers.
``<!-- test: tour, fails -->``
    Run in README order; must exit with status 2 and print an ``error:`` line naming
    the device (``SCOS_SIGAN``): the test machine has no radio.
``<!-- test: covered-by PATH [PATH ...] -->``
    Exercised by those files: every listed file must exist, and for every command of
    the block one of them must mention its subject (program and first argument, see
    ``subject``).
``<!-- test: not-run REASON -->``
    Not run. Only the blocks in ``NOT_RUN`` (keyed by their first command) may be
    not-run, so a new one fails the test until someone adds it here deliberately:

    * ``mkdir -p mysensor/flowgraphs`` (then ``gnuradio-companion``): GNU Radio
      Companion is an interactive GUI. The tour block after it needs what the user
      saves there, so the test makes a stand-in just before that block: it runs the
      block's commands other than ``gnuradio-companion`` and writes
      ``mysensor/acquire_iq_long.grc``, a copy of ``flowgraphs/acquire_iq.grc`` whose
      Options block ID is ``acquire_iq_long`` (the user's other edit, the default of
      ``duration_ms``, is left out: the block's ``actions.yaml`` fixes it anyway).
    * ``sudo runuser -u scos -- ... users add admin --admin`` (then ``systemctl`` and
      ``journalctl``): the test machine's PID 1 is not systemd;
      tests/deploy/test_systemd.py verifies the units with systemd-analyze.
    * ``cp deploy/gr-scos.conf.example deploy/gr-scos.conf`` (then ``docker
      compose``): no Docker daemon on the test machine; tests/deploy/test_docker.py
      checks the files.

Any other fenced ```sh or ```python block without one of these markers fails the
test; other fences (```yaml, plain ``` output) are not commands and are ignored.

How the tour runs: each block is a script of its own (``bash -euo pipefail``, or the
venv's python), with a timeout, in a temporary working directory in which the
repository's needed top-level entries (``LINKED``) are symlinked, so that what the
tour writes (``first.tar``, ``lab/``, ``data/``, ``mysensor/``, ``my.conf``, ...)
lands there and not in the checkout. Every block gets the sensor's environment
(``SCOS_HOME``, ``SCOS_SETTINGS_FILE=""``, a scratch ``HOME``). Shell variables
carry across blocks as a user's terminal keeps them: an sh block runs under
``set -a`` (assignments are exported) and ends with ``env -0 > STATE``; that
environment is the next block's.

Placeholders, the only changes made to a block's text before it runs (the test fails
if the README no longer contains them):

* a line starting ``TOKEN=`` gets the admin token ``make run`` printed;
* ``http://127.0.0.1:8000`` becomes ``http://127.0.0.1:PORT``, the tour sensor's port.

Besides exit statuses, ``CHECKS`` verifies what a user would see, keyed by a
distinctive substring of the command it checks; each key must match exactly one tour
block.
"""

import json
import os
import re
import shlex
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, free_port, wait_until_answering

README = REPO / "README.md"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
COMMAND_LANGUAGES = ("sh", "python")
BLOCK_TIMEOUT = 120
START_TIMEOUT = 120
STOP_TIMEOUT = 30
# The checkout's top-level entries the tour's commands use, symlinked into its
# working directory (the venv's editable install points at the checkout anyway).
LINKED = (
    ".venv",
    "Makefile",
    "pyproject.toml",
    "deploy",
    "grc",
    "flowgraphs",
    "grscos",
    "actions",
    "blocks",
    "scheduler",
    "storage",
    "webapi",
)
# Tour outputs that must never appear in the checkout.
TOUR_OUTPUTS = ("first.tar", "first", "lab", "data", "mysensor", "my.conf", "selftest")
README_PORT_URL = "http://127.0.0.1:8000"
TOKEN_LINE = re.compile(r"^TOKEN=\S*", re.MULTILINE)
HEX_TOKEN = re.compile(r"^[0-9a-f]{64}$", re.MULTILINE)
# The GNU Radio Companion stand-in: what the README tells the user to save in the GUI.
GRC_COPY = "mysensor/acquire_iq_long.grc"
GRC_COPY_ID = "acquire_iq_long"

MARKER = re.compile(r"^<!--\s*test:\s*(?P<body>.*?)\s*-->\s*$")
MARKER_START = re.compile(r"^<!--\s*test:")
FENCE = re.compile(r"^```(?P<language>[^`\s]*)\s*$")
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTIONS = {">", ">>", "<", "<<", "<<-", "<<<", ">&", "<&", "2>", "&>"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


# --- parsing the README -----------------------------------------------------------


@dataclass
class Block:
    """A fenced block: ``line`` is the 1-based line of its opening fence."""

    line: int
    language: str
    text: str
    kind: str | None = None  # tour, fails, covered-by, not-run; None: no marker
    paths: tuple[str, ...] = ()  # covered-by
    reason: str = ""  # not-run

    @property
    def commands(self) -> list[str]:
        """An sh block's commands, words joined by a space; none for Python."""
        if self.language != "sh":
            return []
        return [" ".join(tokens) for tokens in shell_commands(self.text)]

    @property
    def name(self) -> str:
        first = self.commands[0] if self.commands else self.language
        return f"L{self.line}-" + re.sub(r"[^A-Za-z0-9_.]+", "-", first)[:40].strip("-")


def parse_readme(text: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a README and the problems with their markers."""
    lines = text.splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    used_markers: set[int] = set()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        start = index
        index += 1
        body = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index])
            index += 1
        index += 1  # the closing fence
        block = Block(line=start + 1, language=fence["language"], text="\n".join(body) + "\n")
        before = lines[start - 1] if start > 0 else ""
        marker = MARKER.match(before)
        if MARKER_START.match(before):
            used_markers.add(start - 1)
        if block.language not in COMMAND_LANGUAGES:
            if MARKER_START.match(before):
                problems.append(
                    f"line {start}: a test marker before a ```{block.language} block, which "
                    "is not a command block (only ```sh and ```python are)"
                )
            blocks.append(block)
            continue
        if not marker:
            problems.append(
                f"line {block.line}: the ```{block.language} block has no test marker on the "
                "line before it (<!-- test: tour | tour, fails | covered-by PATH... | "
                "not-run REASON -->)"
                + (f"; found {before!r}" if MARKER_START.match(before) else "")
            )
        else:
            _apply_marker(block, marker["body"], problems)
        blocks.append(block)
    for number, line in enumerate(lines):
        if MARKER_START.match(line) and number not in used_markers:
            problems.append(f"line {number + 1}: test marker not just before a fenced block")
    return blocks, problems


def _apply_marker(block: Block, body: str, problems: list[str]) -> None:
    words = body.split()
    if body == "tour":
        block.kind = "tour"
    elif re.fullmatch(r"tour,\s*fails", body):
        block.kind = "fails"
    elif words and words[0] == "covered-by" and len(words) > 1:
        block.kind, block.paths = "covered-by", tuple(words[1:])
        if block.language != "sh":
            problems.append(f"line {block.line}: covered-by is for ```sh blocks only")
    elif words and words[0] == "not-run" and len(words) > 1:
        block.kind, block.reason = "not-run", body.split(None, 1)[1]
    else:
        problems.append(f"line {block.line - 1}: unknown test marker {body!r}")


def shell_commands(text: str) -> list[list[str]]:
    """The simple commands of a shell block, each as its words (comments, heredoc
    bodies and line continuations handled; ``&&``, ``||``, ``;``, ``|`` split)."""
    commands: list[list[str]] = []
    lines = text.replace("\\\n", " ").splitlines()
    heredoc_end = None
    for line in lines:
        if heredoc_end is not None:
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        for position, token in enumerate(tokens[:-1]):
            if token in ("<<", "<<-"):
                heredoc_end = tokens[position + 1]
        current: list[str] = []
        for token in tokens:
            if token in SEPARATORS:
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
        if current:
            commands.append(current)
    return commands


def subject(words: list[str]) -> tuple[str, str | None] | None:
    """A command's program (basename, after ``sudo``, ``runuser -u USER --`` and
    ``VAR=value``) and its first argument; None for a bare assignment."""
    words = list(words)
    while words:
        if words[0] == "sudo":
            words.pop(0)
        elif words[0] == "runuser":
            words = words[words.index("--") + 1 :] if "--" in words else words[1:]
        elif ASSIGNMENT.match(words[0]):
            words.pop(0)
        else:
            break
    if not words:
        return None
    program = words[0].rsplit("/", 1)[-1]
    argument = words[1] if len(words) > 1 and words[1] not in REDIRECTIONS else None
    return program, argument


def coverage_problems(block: Block, root: Path) -> list[str]:
    problems = []
    texts = {}
    for path in block.paths:
        file = root / path
        if file.is_file():
            texts[path] = file.read_text(errors="replace")
        else:
            problems.append(f"line {block.line}: covered-by file {path} does not exist")
    for words in shell_commands(block.text):
        found = subject(words)
        if found is None:
            continue
        needed = [part for part in found if part]
        if not any(all(part in text for part in needed) for text in texts.values()):
            problems.append(
                f"line {block.line}: `{' '.join(words)}` (subject {' '.join(needed)!r}) is "
                f"not mentioned in {' or '.join(block.paths)}"
            )
    return problems


def readme_problems(text: str, root: Path, not_run: dict) -> list[str]:
    """Markers, covered-by coverage and the not-run allowlist of a README text."""
    blocks, problems = parse_readme(text)
    seen = set()
    for block in blocks:
        if block.kind == "covered-by":
            problems += coverage_problems(block, root)
        elif block.kind == "not-run":
            first = block.commands[0] if block.commands else ""
            if first in not_run:
                seen.add(first)
            else:
                problems.append(
                    f"line {block.line}: not-run block `{first}` ({block.reason}) is not in "
                    "the allowlist NOT_RUN of tests/deploy/test_readme.py"
                )
    for first in not_run.keys() - seen:
        problems.append(f"NOT_RUN lists `{first}`, which is no not-run block of the README")
    return problems


# --- the tour -----------------------------------------------------------------------


@dataclass
class Result:
    block: Block
    script: str  # what ran, placeholders substituted
    returncode: int
    stdout: str
    stderr: str
    workdir: Path
    env: dict[str, str]  # after the block

    def report(self) -> str:
        return (
            f"README block at line {self.block.line} exited with {self.returncode}:\n"
            f"{self.script}\n--- stdout:\n{self.stdout[-6000:]}\n--- stderr:\n"
            f"{self.stderr[-6000:]}"
        )


def run_script(
    argv: list[str], workdir: Path, env: dict[str, str], timeout: float = BLOCK_TIMEOUT
) -> subprocess.CompletedProcess:
    """Run in a session of its own; the whole session is killed on a timeout."""
    process = subprocess.Popen(
        argv,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        stderr += f"\n[killed after the timeout of {timeout:g} s]"
        return subprocess.CompletedProcess(argv, -signal.SIGKILL, stdout, stderr)
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def run_block(block: Block, script: str, workdir: Path, env: dict[str, str], scratch: Path):
    """Run one block's (substituted) text; sh blocks hand their environment on."""
    state = scratch / f"state-{block.line}"
    if block.language == "sh":
        file = scratch / f"block-{block.line}.sh"
        file.write_text(f"set -a\n{script}\nenv -0 > {shlex.quote(str(state))}\n")
        argv = ["bash", "-euo", "pipefail", str(file)]
    else:
        file = scratch / f"block-{block.line}.py"
        file.write_text(script)
        argv = [str(VENV_PYTHON), str(file)]
    done = run_script(argv, workdir, env)
    after = dict(env)
    if block.language == "sh" and state.is_file():
        after = {}
        for entry in state.read_text().split("\0"):
            name, equals, value = entry.partition("=")
            if equals and name not in ("_", "SHLVL", "PWD", "OLDPWD"):
                after[name] = value
    return Result(block, script, done.returncode, done.stdout, done.stderr, workdir, after)


def substitute(text: str, token: str, port: int) -> str:
    text = TOKEN_LINE.sub(f"TOKEN={token}", text)
    return text.replace(README_PORT_URL, f"http://127.0.0.1:{port}")


def grc_stand_in(block: Block, workdir: Path, env: dict[str, str], scratch: Path) -> None:
    """What the user does in GNU Radio Companion: the block's other commands, then the
    shipped flowgraph saved as GRC_COPY with the Options block's ID GRC_COPY_ID."""
    commands = shell_commands(block.text)
    gui = [
        words
        for words in commands
        if any(word.rsplit("/", 1)[-1] == "gnuradio-companion" for word in words)
    ]
    assert len(gui) == 1, f"no gnuradio-companion command in:\n{block.text}"
    shipped = [word for word in gui[0] if word.endswith(".grc")]
    assert len(shipped) == 1, gui[0]
    others = [words for words in commands if words is not gui[0]]
    script = "\n".join(shlex.join(words) for words in others)
    done = run_script(["bash", "-euo", "pipefail", "-c", script], workdir, env)
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    flowgraph = yaml.safe_load((workdir / shipped[0]).read_text())
    assert flowgraph["options"]["parameters"]["id"] != GRC_COPY_ID
    flowgraph["options"]["parameters"]["id"] = GRC_COPY_ID
    (workdir / GRC_COPY).write_text(yaml.safe_dump(flowgraph, sort_keys=False))


@dataclass
class NotRun:
    reason: str
    stand_in: Callable[[Block, Path, dict, Path], None] | None = None


NOT_RUN = {
    "mkdir -p mysensor/flowgraphs": NotRun(
        "GNU Radio Companion is an interactive GUI; grc_stand_in saves what the user would",
        grc_stand_in,
    ),
    "sudo runuser -u scos -- $PWD/.venv/bin/gr-scos users add admin --admin": NotRun(
        "systemctl and journalctl need systemd as PID 1, which the test machine lacks; "
        "tests/deploy/test_systemd.py verifies the units with systemd-analyze"
    ),
    "cp deploy/gr-scos.conf.example deploy/gr-scos.conf": NotRun(
        "docker compose needs a Docker daemon, which the test machine lacks; "
        "tests/deploy/test_docker.py checks the files"
    ),
}


# --- what a user sees: checks keyed by a distinctive substring of the command -------


def _recordings(result: Result, folder: str) -> list[Path]:
    """The recordings an acquire printed (one path per line), all in ``folder``."""
    paths = []
    for line in result.stdout.splitlines():
        line = line.strip()
        if line.endswith(".sigmf-meta"):
            path = Path(line) if Path(line).is_absolute() else result.workdir / line
            assert path.is_file(), f"printed recording {line} does not exist"
            assert path.with_suffix(".sigmf-data").is_file(), f"no data file beside {line}"
            assert path.parent == result.workdir / folder.rstrip("/"), f"{line} not in {folder}"
            paths.append(path)
    assert paths, f"no recording (.sigmf-meta path) printed; stdout:\n{result.stdout}"
    return paths


def _frequencies(paths: list[Path]) -> set[float]:
    return {
        float(capture["core:frequency"])
        for path in paths
        for capture in json.loads(path.read_text())["captures"]
    }


def _hex_tokens(text: str) -> list[str]:
    return HEX_TOKEN.findall(text)


def _has(text: str, key: str, value) -> bool:
    """Whether JSON ``text`` has ``"key": value`` (any spacing)."""
    return re.search(rf'"{re.escape(key)}":\s*{re.escape(json.dumps(value))}', text) is not None


def check_first_entry(result: Result) -> None:
    assert _has(result.stdout, "healthy", True), "/status is not healthy"
    assert _has(result.stdout, "name", "acquire_m4s"), "/capabilities lacks acquire_m4s"
    assert _has(result.stdout, "id", "first"), "POST /schedule did not answer id first"


def check_more_entries(result: Result) -> None:
    assert _has(result.stdout, "id", "m4s-every-10-s"), "no entry m4s-every-10-s"
    assert _has(result.stdout, "id", "later"), "no entry later"
    upcoming = result.stdout.splitlines()[-1]
    assert _has(upcoming, "schedule_id", "later"), "/tasks/upcoming does not list later"


def check_archive(result: Result) -> None:
    archive = result.workdir / "first.tar"
    assert tarfile.is_tarfile(archive), "first.tar is not a tar"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names and all(name.endswith(".sigmf") for name in names), names
    assert "first_1_0.sigmf" in names, names


def check_sigmf_read(result: Result) -> None:
    lines = result.stdout.splitlines()
    assert lines and lines[0] == "acquire_m4s", result.stdout
    for detector in ("fft_min_power", "fft_max_power", "fft_mean_power", "fft_median_power"):
        assert re.search(rf"^{detector} from sample \d+$", result.stdout, re.M), detector
    assert re.search(r"^fft_sample_power from sample \d+$", result.stdout, re.M)
    shape = re.search(r"^\((\d+), 1024\) ", result.stdout, re.M)
    assert shape and int(shape[1]) % 5 == 0, "spectra are not rows of 1024, 5 per record"


def check_status(result: Result) -> None:
    assert re.search(r"^healthy: yes$", result.stdout, re.M), "gr-scos status: not healthy"


def check_metrics(result: Result) -> None:
    assert 'scos_tasks_total{action="acquire_m4s",status="success"}' in result.stdout


def check_replay_source(result: Result) -> None:
    recording = result.env.get("RECORDING", "")
    assert recording.startswith("lab/") and recording.endswith(".sigmf-meta"), recording
    assert recording in result.stdout.splitlines(), "echo $RECORDING printed something else"
    assert (result.workdir / recording).is_file()


def check_replay(result: Result) -> None:
    source = result.workdir / result.env.get("RECORDING", "-")
    replayed = [path for path in _recordings(result, "lab/") if path != source]
    assert len(replayed) == 1, replayed
    assert "acquire_m4s" in replayed[0].read_text(), "the replay's recording is no acquire_m4s"
    assert _frequencies(replayed) == _frequencies([source]), "the replay kept no frequency"


def check_grcc(result: Result) -> None:
    generated = result.workdir / "mysensor" / "flowgraphs" / f"{GRC_COPY_ID}.py"
    assert generated.is_file(), "grcc did not write the flowgraph's Python"


def check_own_action_listed(result: Result) -> None:
    assert re.search(rf"^{GRC_COPY_ID}\b", result.stdout, re.M), "action not listed"


def check_own_action_ran(result: Result) -> None:
    assert len(_recordings(result, "mysensor/data/")) == 1


def check_user_added(result: Result) -> None:
    assert "alice" in result.stdout
    assert len(_hex_tokens(result.stdout)) == 2, "users add and rotate did not print tokens"
    added, rotated = _hex_tokens(result.stdout)
    assert added != rotated, "users rotate printed the old token"


def check_user_removed(result: Result) -> None:
    assert re.search(r"^removed alice$", result.stdout, re.M)


def check_config_check(result: Result) -> None:
    assert re.search(r"^configuration OK$", result.stdout, re.M)


def check_config_example(result: Result) -> None:
    conf = result.workdir / "my.conf"
    assert conf.is_file() and "SCOS_HOME" in conf.read_text(), "my.conf lacks SCOS_HOME"


def check_db_upgrade(result: Result) -> None:
    assert "is at the latest revision" in result.stdout


def check_selftest(result: Result) -> None:
    assert re.search(r"^selftest passed: \d+ checks$", result.stdout, re.M)
    assert list((result.workdir / "lab" / "selftest").rglob("*.sigmf-meta")), "no recordings"


def check_acquires(result: Result) -> None:
    recordings = _recordings(result, "data/")
    assert len(recordings) == 4, recordings  # two M4S, two stepped IQ
    assert {1e9, 2e9, 3.5e9} <= _frequencies(recordings)


CHECKS: dict[str, Callable[[Result], None]] = {
    '{"name": "first", "action": "acquire_m4s"}': check_first_entry,
    '"name": "m4s every 10 s"': check_more_entries,
    "-o first.tar": check_archive,
    'sigmf.fromarchive("first/first_1_0.sigmf")': check_sigmf_read,
    ".venv/bin/gr-scos status": check_status,
    "$API/metrics": check_metrics,
    "echo $RECORDING": check_replay_source,
    "--sigan replay:$RECORDING": check_replay,
    "grcc -o mysensor/flowgraphs": check_grcc,
    "gr-scos actions --config mysensor": check_own_action_listed,
    "acquire acquire_iq_long --config mysensor": check_own_action_ran,
    "gr-scos users add alice": check_user_added,
    "gr-scos users remove alice": check_user_removed,
    "gr-scos config check ": check_config_check,
    "config example > my.conf": check_config_example,
    "gr-scos db upgrade": check_db_upgrade,
    "selftest --out lab/selftest": check_selftest,
    "acquire_stepped_iq --set": check_acquires,
}


def check_fails(result: Result) -> None:
    """A ``tour, fails`` block: exit status 2 and an error line naming the device."""
    device = re.search(r"SCOS_SIGAN=(\S+)", result.block.text)
    assert device, "a failing tour block must set SCOS_SIGAN"
    assert result.returncode == 2, result.report()
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "error:" in line]
    assert any(device[1] in line for line in errors), result.report()


# --- the README's own structure -----------------------------------------------------


README_TEXT = README.read_text()
BLOCKS, _ = parse_readme(README_TEXT)


def tour_steps(blocks: list[Block]) -> list[tuple[Block, Block | None]]:
    """The tour blocks after ``make run``, each with the not-run block before it whose
    stand-in it needs (or None)."""
    steps, pending = [], None
    for block in blocks:
        if block.kind == "not-run":
            entry = NOT_RUN.get(block.commands[0] if block.commands else "")
            pending = block if entry and entry.stand_in else None
        elif block.kind in ("tour", "fails"):
            steps.append((block, pending))
            pending = None
    return steps[1:]


def tour_problems(blocks: list[Block]) -> list[str]:
    problems = []
    tour = [block for block in blocks if block.kind in ("tour", "fails")]
    if not tour or tour[0].language != "sh" or tour[0].commands != ["make run"]:
        problems.append("the first tour block must be exactly `make run`")
    later = "".join(block.text for block in tour[1:])
    if not TOKEN_LINE.search(later):
        problems.append("no tour block has a line starting TOKEN= (the token placeholder)")
    if README_PORT_URL not in later:
        problems.append(f"no tour block uses {README_PORT_URL} (the port placeholder)")
    for key in CHECKS:
        matching = [block.line for block in tour[1:] if block.kind == "tour" and key in block.text]
        if len(matching) != 1:
            problems.append(f"CHECKS key {key!r} matches {len(matching)} tour blocks, not 1")
    for block in tour:
        if block.kind == "fails" and not re.search(r"SCOS_SIGAN=\S+", block.text):
            problems.append(f"line {block.line}: a failing tour block names no SCOS_SIGAN device")
    for block, stand_in in tour_steps(blocks):
        if stand_in is not None and GRC_COPY not in block.text:
            problems.append(f"line {block.line}: the block after the GUI does not use {GRC_COPY}")
    return problems


def test_readme_blocks_are_marked_covered_and_allowlisted():
    problems = readme_problems(README_TEXT, REPO, NOT_RUN) + tour_problems(BLOCKS)
    assert not problems, "\n".join(problems)


# --- the checker itself must be able to fail ------------------------------------------


GOOD_README = """\
# x

<!-- test: tour -->
```sh
make run
```

```
output, not a command
```

<!-- test: covered-by covered.py -->
```sh
sudo make install-service   # comment
sudo runuser -u scos -- $PWD/.venv/bin/gr-scos config check
cmake -B build && ctest --test-dir build
```

<!-- test: not-run GUI -->
```sh
gnuradio-companion x.grc
```

```yaml
a: 1
```
"""
COVERED_PY = 'run(["make", "install-service"]); "gr-scos config"; cmake -B; ctest --test-dir\n'
GOOD_NOT_RUN = {"gnuradio-companion x.grc": NotRun("GUI")}


@pytest.fixture
def covered(tmp_path) -> Path:
    (tmp_path / "covered.py").write_text(COVERED_PY)
    return tmp_path


def test_a_well_formed_readme_has_no_problems(covered):
    assert readme_problems(GOOD_README, covered, GOOD_NOT_RUN) == []
    blocks, _ = parse_readme(GOOD_README)
    assert not any("make run" in problem for problem in tour_problems(blocks))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("<!-- test: tour -->\n", ""), "line 3: the ```sh block has no test marker"),
        (("<!-- test: tour -->\n", "<!-- test: tour -->\n\n"), "no test marker"),
        (("<!-- test: tour -->\n", "<!-- test: tour -->\n\n"), "not just before a fenced block"),
        (("<!-- test: tour -->", "<!-- test: tuor -->"), "unknown test marker 'tuor'"),
        (("<!-- test: tour -->", "<!-- test: covered-by -->"), "unknown test marker"),
        (("test: not-run GUI", "test: not-run"), "unknown test marker 'not-run'"),
        (("```yaml", "<!-- test: tour -->\n```yaml"), "before a ```yaml block"),
        (("```sh\nmake run", "```python\nmake run"), "exactly `make run`"),
        (("--test-dir", "--output-on-failure"), "`ctest --output-on-failure build` (subject"),
        (("sudo make install-service", "make uninstall"), "`make uninstall` (subject"),
        (("covered-by covered.py", "covered-by gone.py"), "covered-by file gone.py does not"),
        (("x.grc\n", "y.grc\n"), "`gnuradio-companion y.grc` (GUI) is not in the allowlist"),
        (("x.grc\n", "y.grc\n"), "NOT_RUN lists `gnuradio-companion x.grc`, which is no"),
    ],
)
def test_a_broken_readme_is_reported(covered, change, problem):
    text = GOOD_README.replace(*change, 1)
    assert text != GOOD_README
    blocks, _ = parse_readme(text)
    problems = readme_problems(text, covered, GOOD_NOT_RUN) + tour_problems(blocks)
    assert any(problem in found for found in problems), problems


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("sudo make install-service", ("make", "install-service")),
        ("cmake -B build -DX=1", ("cmake", "-B")),
        ("ctest --test-dir build", ("ctest", "--test-dir")),
        ("sudo runuser -u scos -- $PWD/.venv/bin/gr-scos config check", ("gr-scos", "config")),
        ("SCOS_SIGAN=uhd:type=b200 .venv/bin/gr-scos config check", ("gr-scos", "config")),
        ("deploy/make-lab-certs.sh --host h lab-certs/", ("make-lab-certs.sh", "--host")),
        ("make run     # a comment", ("make", "run")),
        ("gr-scos config example > my.conf", ("gr-scos", "config")),
        ("whoami > me", ("whoami", None)),
    ],
)
def test_subject(command, expected):
    (words,) = shell_commands(command)
    assert subject(words) == expected


def test_commands_skip_heredocs_and_split_lists():
    text = "a 1 && b 2 | c\ncat > f <<'EOF'\nnot: a command\nEOF\nd \\\n  --x  # note\n"
    assert [" ".join(words) for words in shell_commands(text)] == [
        "a 1",
        "b 2",
        "c",
        "cat > f << EOF",
        "d --x",
    ]


def test_a_failing_block_reports_its_output(tmp_path):
    block = Block(1, "sh", "X=1\necho visible; echo oops >&2; exit 3\n", "tour")
    result = run_block(block, block.text, tmp_path, dict(os.environ), tmp_path)
    assert result.returncode == 3
    assert "visible" in result.report() and "oops" in result.report()


def test_shell_variables_carry_to_the_next_block(tmp_path):
    first = Block(1, "sh", "A=one\nB=$(echo two)\n", "tour")
    result = run_block(first, first.text, tmp_path, dict(os.environ), tmp_path)
    second = Block(2, "sh", 'test "$A $B" = "one two"\n', "tour")
    assert run_block(second, second.text, tmp_path, result.env, tmp_path).returncode == 0
    unset = run_block(second, second.text, tmp_path, dict(os.environ), tmp_path)
    assert unset.returncode != 0, "set -u did not stop an unset variable"


@pytest.mark.parametrize("key", CHECKS)
def test_every_check_can_fail(tmp_path, key):
    block = next(block for block in BLOCKS if key in block.text)
    result = Result(block, block.text, 0, "", "", tmp_path, {})
    with pytest.raises((AssertionError, OSError, tarfile.TarError)):
        CHECKS[key](result)


def test_a_failing_block_must_name_its_device(tmp_path):
    block = Block(1, "sh", "SCOS_SIGAN=uhd:type=b200 gr-scos config check\n", "fails")
    ok = Result(block, block.text, 2, "", "x: error: device 'uhd:type=b200': no", tmp_path, {})
    check_fails(ok)
    for bad in (
        Result(block, block.text, 1, "", ok.stderr, tmp_path, {}),
        Result(block, block.text, 2, "", "x: error: no device", tmp_path, {}),
    ):
        with pytest.raises(AssertionError):
            check_fails(bad)


# --- the tour against `make run` --------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str, int, int] | None:
    """(command name, state, parent, session) of a process, or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return name, fields[0], int(fields[1]), int(fields[3])


def _living(session: int) -> list[int]:
    """The processes of a session that have not exited (zombies excluded)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[3] == session and stat[1] != "Z":
                pids.append(int(entry.name))
    return pids


def _children(pid: int) -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and (_proc_stat(int(entry.name)) or ("", "", 0, 0))[2] == pid
    ]


@dataclass
class Tour:
    workdir: Path
    scratch: Path
    make: subprocess.Popen
    log: Path
    port: int
    token: str
    env: dict[str, str]
    git_before: str
    failed: list[str] = field(default_factory=list)  # names of the tour blocks that failed
    results: list[Result] = field(default_factory=list)

    def sensor_pid(self) -> int:
        """``gr-scos run``: make's child, or the child of the shell make started."""
        pids = _children(self.make.pid)
        while len(pids) == 1 and (_proc_stat(pids[0]) or ("",))[0] in ("sh", "dash", "bash"):
            pids = _children(pids[0])
        assert len(pids) == 1, f"make run has children {pids}, expected gr-scos run"
        return pids[0]

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-8000:]


def git_status() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain"],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ | {"GIT_OPTIONAL_LOCKS": "0"},
    )
    return done.stdout


def make_run(workdir: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """The real ``make run`` in the tour's directory. ``--old-file`` keeps make from
    running deploy/bootstrap.sh, which tests/test_bootstrap.py covers: here it would
    pip-install the symlinked temporary directory into the shared venv."""
    with log.open("w") as output:
        return subprocess.Popen(
            ["make", "--old-file=.venv/.bootstrapped", "run"],
            cwd=workdir,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for_token(make: subprocess.Popen, log: Path, port: int) -> str:
    """The admin token after make run's banner; fails if the banner does not come."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and make.poll() is None:
        lines = log.read_text(errors="replace").splitlines()
        for number, line in enumerate(lines):
            if f"127.0.0.1:{port}" in line and "gr-scos sensor: API" in line:
                after = lines[number + 1 : number + 3]
                if len(after) == 2:
                    assert after[0] == "created the user admin; its API token (shown once):"
                    assert HEX_TOKEN.fullmatch(after[1]), after[1]
                    return after[1]
        time.sleep(0.2)
    raise AssertionError(f"make run printed no banner on port {port}:\n{log.read_text()}")


def _stop_session(make: subprocess.Popen) -> list[int]:
    """SIGTERM to make run's process group, SIGKILL if that is not enough; returns the
    processes of its session that had to be killed one by one afterwards."""
    if make.poll() is None:
        os.killpg(make.pid, signal.SIGTERM)
        try:
            make.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
    deadline = time.monotonic() + STOP_TIMEOUT
    while _living(make.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = _living(make.pid)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return leftovers


@pytest.fixture(scope="module")
def tour(tmp_path_factory) -> Iterator[Tour]:
    """``make run`` in a working directory standing in for the checkout."""
    git_before = git_status()
    base = tmp_path_factory.mktemp("tour")
    workdir, scratch, home = base / "work", base / "scratch", base / "home"
    for folder in (workdir, scratch, home):
        folder.mkdir()
    for name in LINKED:
        (workdir / name).symlink_to(REPO / name)
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("SCOS_")}
    env |= {
        "SCOS_HOME": str(base / "sensor-home"),
        "SCOS_API_BIND": f"127.0.0.1:{port}",
        "SCOS_SETTINGS_FILE": "",
        "HOME": str(home),
    }
    log = scratch / "make-run.log"
    make = make_run(workdir, env, log)
    running = None
    try:
        token = _wait_for_token(make, log, port)
        wait_until_answering(
            f"http://127.0.0.1:{port}/api/v1", {"Authorization": f"Token {token}"}, make
        )
        running = Tour(workdir, scratch, make, log, port, token, env, git_before)
        yield running
    finally:
        leftovers = _stop_session(make)
        assert not leftovers, f"processes of make run still alive after it stopped: {leftovers}"


@pytest.mark.parametrize(
    ("block", "stand_in"),
    [pytest.param(block, stand_in, id=block.name) for block, stand_in in tour_steps(BLOCKS)],
)
def test_tour(tour, block, stand_in):
    """One README block, in README order, after those before it. A block that fails
    does not stop the tour: the next ones run with the environment of the last block
    that passed, and say which blocks failed before them."""
    env = tour.results[-1].env if tour.results else tour.env
    earlier = f" (earlier tour blocks failed: {', '.join(tour.failed)})" if tour.failed else ""
    tour.failed.append(block.name)  # until it passes
    if stand_in is not None:
        NOT_RUN[stand_in.commands[0]].stand_in(stand_in, tour.workdir, env, tour.scratch)
    result = run_block(
        block, substitute(block.text, tour.token, tour.port), tour.workdir, env, tour.scratch
    )
    if block.kind == "fails":
        try:
            check_fails(result)
        except AssertionError as error:
            pytest.fail(f"{error}{earlier}", pytrace=False)
    else:
        if result.returncode != 0:
            pytest.fail(result.report() + earlier, pytrace=False)
        for key, check in CHECKS.items():
            if key in block.text:
                try:
                    check(result)
                except AssertionError as error:
                    pytest.fail(f"{check.__name__}: {error}{earlier}\n{result.report()}", False)
        tour.results.append(result)
    tour.failed.remove(block.name)


def test_make_run_stops_cleanly_on_sigterm(tour):
    """SIGTERM to the sensor make started: it stops, make exits 0, nothing is left."""
    assert tour.make.poll() is None, f"make run exited early:\n{tour.output()}"
    os.kill(tour.sensor_pid(), signal.SIGTERM)
    try:
        status = tour.make.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"make run did not stop within {STOP_TIMEOUT} s of SIGTERM")
    assert status == 0, f"make run exited with {status}:\n{tour.output()}"
    deadline = time.monotonic() + STOP_TIMEOUT
    while _living(tour.make.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _living(tour.make.pid), "processes of the sensor outlived it"


def test_tour_left_the_checkout_alone(tour):
    """Nothing new in ``git status`` where the tour could reach the checkout: its
    top level and the LINKED entries (others may edit elsewhere, e.g. tests/,
    meanwhile), and none of the tour's outputs."""
    before = set(tour.git_before.splitlines())
    new = [line for line in git_status().splitlines() if line not in before]
    reachable = [
        line for line in new if "/" not in line[3:].rstrip("/") or line[3:].split("/")[0] in LINKED
    ]
    assert not reachable, f"the tour changed the checkout: {reachable}"
    written = [name for name in TOUR_OUTPUTS if (REPO / name).exists()]
    assert not written, f"the tour wrote {written} into the checkout"

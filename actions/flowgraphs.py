"""Finding the action flowgraphs and the parameters they take.

A flowgraph is the Python that ``grcc`` generates from a ``.grc`` file: a module
``<id>.py`` holding a ``gr.top_block`` subclass ``<id>`` whose constructor takes
the flowgraph's GRC parameter blocks as keyword arguments with their defaults.
The shipped flowgraphs live in ``grscos.flowgraphs``; an owner's own go in the
``flowgraphs/`` folder of the configuration directory. Every flowgraph must take
the runtime parameters ``device``, ``output`` and ``global_extensions``, so the
runner can choose the signal analyzer, place the recordings and stamp them.
"""

import importlib
import importlib.util
import inspect
import pkgutil
from dataclasses import dataclass
from pathlib import Path

from . import parameters
from .registry import ActionError

PACKAGE = "grscos.flowgraphs"
REQUIRED_RUNTIME = ("device", "output", "global_extensions")


@dataclass(frozen=True)
class Flowgraph:
    """A flowgraph: ``source`` is a module name or the path of a generated .py file;
    ``parameters`` maps its action-level parameter names to their defaults."""

    name: str
    source: str
    parameters: dict[str, object]

    def load(self) -> type:
        """The flowgraph's top-block class."""
        return load_class(self.name, self.source)

    def flowgraph_arguments(self, values: dict[str, object]) -> dict[str, object]:
        """``values`` by action-level name as keyword arguments of the flowgraph."""
        return {parameters.FLOWGRAPH_NAMES.get(name, name): value for name, value in values.items()}


def load_class(name: str, source: str) -> type:
    """The top-block class ``name`` of ``source`` (a module name or a .py path)."""
    return _top_block_class(name, _import(source))


def _import(source: str):
    if not source.endswith(".py"):
        return importlib.import_module(source)
    path = Path(source)
    spec = importlib.util.spec_from_file_location(f"grscos_owner_flowgraph_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _top_block_class(name: str, module) -> type:
    from gnuradio import gr

    found = getattr(module, name, None)
    if not (inspect.isclass(found) and issubclass(found, gr.top_block)):
        raise ActionError(
            f"flowgraph {name}: {module.__name__} has no top block class {name!r} "
            "(generate it with grcc from a .grc whose id is the file name)"
        )
    return found


def _describe(name: str, source: str) -> Flowgraph:
    try:
        cls = _top_block_class(name, _import(source))
    except ActionError:
        raise
    except Exception as error:  # an owner's file can fail in any way while importing
        raise ActionError(f"flowgraph {source}: cannot be loaded: {error}") from None
    signature = inspect.signature(cls.__init__)
    accepted = {
        parameters.ACTION_NAMES.get(key, key): parameter.default
        for key, parameter in signature.parameters.items()
        if key != "self" and parameter.default is not inspect.Parameter.empty
    }
    missing = [key for key in REQUIRED_RUNTIME if key not in accepted]
    if missing:
        raise ActionError(
            f"flowgraph {source}: lacks the parameter block(s) {', '.join(missing)} "
            "that every action flowgraph needs"
        )
    return Flowgraph(name, source, accepted)


def discover(owner_dirs: list[Path] = ()) -> dict[str, Flowgraph]:
    """Every flowgraph: the shipped ones, then each owner folder's ``*.py`` (an owner's
    flowgraph of the same name replaces a shipped one)."""
    package = importlib.import_module(PACKAGE)
    found = {
        info.name: _describe(info.name, f"{PACKAGE}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
    }
    for folder in owner_dirs:
        for path in sorted(Path(folder).glob("*.py")):
            found[path.stem] = _describe(path.stem, str(path))
    return found

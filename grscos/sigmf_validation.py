"""Validation of SCOS SigMF metadata against the Annex A extension schemas.

The JSON Schemas (draft 2020-12) in ``grscos/schemas/`` describe one extension
namespace each: ``scos-core``, ``scos-sensor``, ``scos-algorithm``,
``scos-acquisition`` and the one ``ntia-core`` key gr-scos uses. Each has
``$defs/global``, ``$defs/capture`` and ``$defs/annotation`` listing the namespaced
keys (``namespace:property``) it adds to those places, one ``$def`` per annotation
type (recognised by its ``scos-core:annotation_type`` const), and the nested objects
(Sensor, Antenna, ...), whose properties carry no prefix. They reference each other
by relative ``$ref`` (``scos-core.schema.json#/$defs/HardwareSpec``).

:func:`validate_metadata` checks, in the global object, every capture and every
annotation, that

* every namespace used is declared in ``global.core:extensions``;
* every key of a namespace that has a schema is one that namespace defines in that
  place (an annotation's type decides which keys of the type's namespace it may
  carry), and its value is valid;
* each annotation with ``scos-core:annotation_type`` names a type the schemas
  define and is valid as a whole against it (its required properties included).

Keys of other namespaces (``core`` is SigMF's own business) are left to their owners.
Errors name the JSON path: ``annotations[3].scos-algorithm:number_of_ffts: required``.
:func:`validate_recording` adds the ``sigmf`` package's own checks (core schema,
checksum) with its warnings turned into errors.
"""

import datetime
import json
import math
import re
import warnings
from collections.abc import Iterable
from functools import cache
from importlib.resources import files
from pathlib import Path

from jsonschema import Draft202012Validator, FormatChecker, validators

SCHEMA_BASE = "https://gr-scos.invalid/schemas/"
SCHEMA_SUFFIX = ".schema.json"
ANNOTATION_TYPE = "scos-core:annotation_type"
PLACES = ("global", "capture", "annotation")
MAX_REPORTED = 20

Path_ = tuple[str | int, ...]


class SigMFValidationError(ValueError):
    """Metadata that breaks the SCOS extension schemas; ``errors`` lists every finding."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        shown = self.errors[:MAX_REPORTED]
        if len(self.errors) > MAX_REPORTED:
            shown.append(f"... and {len(self.errors) - MAX_REPORTED} more")
        super().__init__("\n".join(shown))


# --- schemas ---------------------------------------------------------------------------


@cache
def schemas() -> dict[str, dict]:
    """The extension schemas by namespace name, read from the package data."""
    found = {}
    for entry in files("grscos").joinpath("schemas").iterdir():
        if entry.name.endswith(SCHEMA_SUFFIX):
            found[entry.name.removesuffix(SCHEMA_SUFFIX)] = json.loads(entry.read_text("utf-8"))
    return found


def schema_uri(namespace: str, definition: str | None = None) -> str:
    uri = f"{SCHEMA_BASE}{namespace}{SCHEMA_SUFFIX}"
    return uri if definition is None else f"{uri}#/$defs/{definition}"


@cache
def annotation_types() -> dict[str, tuple[str, dict]]:
    """Annotation type name -> (namespace, its schema $def)."""
    types = {}
    for namespace, schema in schemas().items():
        for definition in schema.get("$defs", {}).values():
            tag = definition.get("properties", {}).get(ANNOTATION_TYPE, {})
            if "const" in tag:
                types[tag["const"]] = (namespace, definition)
    return types


def _place_keys(namespace: str, place: str) -> dict:
    return schemas()[namespace].get("$defs", {}).get(place, {}).get("properties", {})


def _is_finite_number(checker, instance) -> bool:
    return (
        isinstance(instance, int | float)
        and not isinstance(instance, bool)
        and math.isfinite(instance)
    )


def _is_integer(checker, instance) -> bool:
    if isinstance(instance, bool):
        return False
    return isinstance(instance, int) or (isinstance(instance, float) and instance.is_integer())


_Validator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"number": _is_finite_number, "integer": _is_integer}
    ),
)
_DATETIME = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})T[0-9:]{8}(\.[0-9]+)?Z$")
_format_checker = FormatChecker(formats=())


@_format_checker.checks("date-time", raises=ValueError)
def _is_datetime(instance) -> bool:
    """The pattern checks the shape; this rejects dates that do not exist (Feb 30)."""
    if not isinstance(instance, str):
        return True
    match = _DATETIME.match(instance)
    if match is None:
        return False
    year, month, day = (int(part) for part in match.group(1, 2, 3))
    datetime.date(year, month, day)
    return True


@cache
def _validator(reference: str):
    return _make_validator({"$ref": reference})


def _make_validator(schema: dict):
    """A draft 2020-12 validator that resolves references between the namespace schemas."""
    try:  # jsonschema >= 4.18 resolves references through the referencing library
        from referencing import Registry
        from referencing.jsonschema import DRAFT202012
    except ImportError:
        from jsonschema import RefResolver

        store = {schema_uri(namespace): document for namespace, document in schemas().items()}
        resolver = RefResolver(base_uri=SCHEMA_BASE, referrer=schema, store=store)
        return _Validator(schema, resolver=resolver, format_checker=_format_checker)
    registry = Registry().with_resources(
        (schema_uri(namespace), DRAFT202012.create_resource(document))
        for namespace, document in schemas().items()
    )
    return _Validator(schema, registry=registry, format_checker=_format_checker)


def schema_errors(instance, schema: str | dict) -> list[tuple[Path_, str]]:
    """(JSON path, reason) for every way ``instance`` breaks ``schema``.

    ``schema`` is a schema URI (e.g. ``schema_uri("scos-sensor", "Sensor")``) or a
    schema of its own, which may reference the namespace schemas by absolute URI.
    """
    validator = _validator(schema) if isinstance(schema, str) else _make_validator(schema)
    found = []
    for error in validator.iter_errors(instance):
        found.extend(_describe(error))
    # A datetime can break both its pattern and its format: report it once.
    return sorted(dict.fromkeys(found), key=lambda item: format_path(item[0]))


# --- error messages ----------------------------------------------------------------------

_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_:\-]+$")
_TYPE_NAMES = {
    "number": "a finite number",
    "integer": "an integer",
    "string": "a string",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
}


def format_path(path: Iterable[str | int]) -> str:
    """``("annotations", 3, "scos-algorithm:window")`` -> ``annotations[3].scos-algorithm:window``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _SIMPLE_KEY.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text


def shown(value) -> str:
    """A value as it reads in a message, short."""
    if isinstance(value, datetime.date | datetime.datetime):
        return f"{value.isoformat()} (a YAML date; quote it to make it a string)"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error) -> list[tuple[Path_, str]]:
    path = tuple(error.absolute_path)
    kind, expected, instance = error.validator, error.validator_value, error.instance
    if kind == "required":
        return [((*path, name), "required") for name in expected if name not in instance]
    if kind == "additionalProperties":
        known = error.schema.get("properties", {})
        patterns = [re.compile(p) for p in error.schema.get("patternProperties", {})]
        return [
            ((*path, name), "unknown property")
            for name in instance
            if name not in known and not any(p.search(name) for p in patterns)
        ]
    if kind == "dependentRequired":
        return [
            ((*path, needed), f"required when {name} is given")
            for name, needs in expected.items()
            if name in instance
            for needed in needs
            if needed not in instance
        ]
    if kind == "propertyNames":
        return [((*path, instance), "unknown property")]
    return [(path, _reason(kind, expected, instance, error))]


def _reason(kind: str, expected, instance, error) -> str:
    got = shown(instance)
    if kind == "type":
        names = [expected] if isinstance(expected, str) else list(expected)
        return f"must be {' or '.join(_TYPE_NAMES.get(n, n) for n in names)}, got {got}"
    if kind == "const":
        return f"must be {json.dumps(expected)}, got {got}"
    if kind == "enum":
        return f"must be one of {', '.join(json.dumps(v) for v in expected)}, got {got}"
    bounds = {
        "minimum": ">=",
        "maximum": "<=",
        "exclusiveMinimum": ">",
        "exclusiveMaximum": "<",
    }
    if kind in bounds:
        return f"must be {bounds[kind]} {expected:g}, got {got}"
    if kind in ("minItems", "maxItems"):
        count = len(instance)
        if error.schema.get("minItems") == error.schema.get("maxItems"):
            return f"must have exactly {expected} values, got {count}"
        least = "at least" if kind == "minItems" else "at most"
        return f"must have {least} {expected} values, got {count}"
    if kind == "minLength" and expected == 1:
        return "must not be empty"
    if kind in ("pattern", "format") and error.schema.get("format") == "date-time":
        return f"must be an ISO 8601 UTC datetime such as 2026-10-01T12:00:00Z, got {got}"
    return error.message


# --- metadata --------------------------------------------------------------------------


def _namespace(key: str) -> str | None:
    namespace, separator, _ = key.partition(":")
    return namespace if separator and namespace else None


class _Checker:
    def __init__(self, meta: dict):
        self.meta = meta
        self.errors: list[str] = []
        self.declared: set[str] = set()
        self.undeclared: set[str] = set()
        # Detection annotations repeat the same properties thousands of times.
        self._memo: dict[tuple[str, str], list[tuple[Path_, str]]] = {}

    def _schema_errors(self, instance: dict, reference: str) -> list[tuple[Path_, str]]:
        try:
            key = (reference, json.dumps(instance, sort_keys=True))
        except (TypeError, ValueError):  # not JSON data: validate without the memo
            return schema_errors(instance, reference)
        if key not in self._memo:
            self._memo[key] = schema_errors(instance, reference)
        return self._memo[key]

    def error(self, path: Path_, reason: str) -> None:
        self.errors.append(f"{format_path(path)}: {reason}")

    def run(self) -> None:
        meta = self.meta
        if not isinstance(meta, dict):
            self.errors.append(f"metadata must be a mapping, got {shown(meta)}")
            return
        header = meta.get("global")
        if not isinstance(header, dict):
            self.error(("global",), "required mapping" if header is None else "must be a mapping")
            return
        self._read_extensions(header)
        self._check_segment(header, ("global",), "global")
        for place, name in (("capture", "captures"), ("annotation", "annotations")):
            segments = meta.get(name, [])
            if not isinstance(segments, list):
                self.error((name,), f"must be a list, got {shown(segments)}")
                continue
            for index, segment in enumerate(segments):
                self._check_segment(segment, (name, index), place)

    def _read_extensions(self, header: dict) -> None:
        path = ("global", "core:extensions")
        extensions = header.get("core:extensions", [])
        if not isinstance(extensions, list):
            self.error(path, f"must be a list, got {shown(extensions)}")
            return
        for index, extension in enumerate(extensions):
            name = extension.get("name") if isinstance(extension, dict) else None
            if not isinstance(name, str) or not name:
                self.error((*path, index, "name"), "required string")
            else:
                self.declared.add(name)

    def _check_segment(self, segment, path: Path_, place: str) -> None:
        if not isinstance(segment, dict):
            self.error(path, f"must be a mapping, got {shown(segment)}")
            return
        type_namespace, type_definition = None, None
        if place == "annotation" and ANNOTATION_TYPE in segment:
            annotation_type = segment[ANNOTATION_TYPE]
            if not isinstance(annotation_type, str):
                self.error(
                    (*path, ANNOTATION_TYPE), f"must be a string, got {shown(annotation_type)}"
                )
                return
            found = annotation_types().get(annotation_type)
            if found is None:
                known = ", ".join(sorted(annotation_types()))
                reason = f"unknown annotation type {shown(annotation_type)}; known types: {known}"
                self.error((*path, ANNOTATION_TYPE), reason)
                return
            type_namespace, type_definition = found
        covered = set(type_definition["properties"]) if type_definition else set()
        by_namespace: dict[str, dict] = {}
        for key, value in segment.items():
            namespace = _namespace(key) if isinstance(key, str) else None
            if namespace is None or namespace == "core":
                continue
            if namespace not in self.declared and namespace not in self.undeclared:
                self.undeclared.add(namespace)
                self.error(
                    (*path, key),
                    f"namespace {namespace} is not declared in global.core:extensions",
                )
            if namespace not in schemas() or key in covered:
                continue
            if key in _place_keys(namespace, place):
                by_namespace.setdefault(namespace, {})[key] = value
            else:
                self.error((*path, key), self._unknown(namespace, key, place, type_definition))
        for namespace, part in by_namespace.items():
            for where, reason in self._schema_errors(part, schema_uri(namespace, place)):
                self.error(path + where, reason)
        if type_definition is not None:
            own = {key: value for key, value in segment.items() if key in covered}
            reference = schema_uri(type_namespace, segment[ANNOTATION_TYPE])
            for where, reason in self._schema_errors(own, reference):
                self.error(path + where, reason)

    @staticmethod
    def _unknown(namespace: str, key: str, place: str, type_definition: dict | None) -> str:
        if place == "capture" and not _place_keys(namespace, place):
            return f"unknown key: {namespace} does not extend captures"
        if place != "annotation":
            return f"unknown key: {namespace} defines no such {place} property"
        owners = " or ".join(
            sorted(
                name
                for name, (_, definition) in annotation_types().items()
                if key in definition["properties"]
            )
        )
        if type_definition is None:
            if owners:
                return f"unknown key here: only annotations of type {owners} carry it"
            return f"unknown key: {namespace} defines no such annotation property"
        current = type_definition["properties"][ANNOTATION_TYPE]["const"]
        if owners:
            return f"unknown key: not a property of {current} (it belongs to {owners})"
        return f"unknown key: not a property of {current}"


def metadata_errors(meta: dict) -> list[str]:
    """Every finding of :func:`validate_metadata`, as ``path: reason`` lines."""
    checker = _Checker(meta)
    checker.run()
    return checker.errors


def validate_metadata(meta: dict) -> None:
    """Check SigMF metadata (the parsed ``.sigmf-meta``) against the SCOS extension schemas.

    Raises :class:`SigMFValidationError` naming the JSON path of every problem.
    """
    errors = metadata_errors(meta)
    if errors:
        raise SigMFValidationError(errors)


def _sigmf_problem(error: BaseException) -> str:
    path = getattr(error, "absolute_path", None)
    message = getattr(error, "message", None)
    if path is not None and message is not None:  # a jsonschema error from sigmf's schema
        return f"{format_path(path) or '(top level)'}: {message}"
    return f"{type(error).__name__}: {error}"


def validate_recording(meta_path: str | Path) -> dict:
    """Validate a recording with the ``sigmf`` package and the SCOS schemas; return its metadata.

    ``sigmf`` checks the core schema and the data file's checksum; its warnings (such
    as an undeclared extension) count as errors. Every message starts with the path.
    """
    import sigmf  # imported here: metadata validation alone does not need it

    path = Path(meta_path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SigMFValidationError([f"{path}: cannot read: {error.strerror}"]) from None
    except ValueError as error:
        raise SigMFValidationError([f"{path}: not valid JSON: {error}"]) from None
    errors = metadata_errors(meta)
    if errors:
        raise SigMFValidationError([f"{path}: {line}" for line in errors])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            sigmf.fromfile(str(path)).validate()
        except Exception as error:  # sigmf raises its own errors, jsonschema's and warnings
            raise SigMFValidationError([f"{path}: sigmf: {_sigmf_problem(error)}"]) from error
    return meta

"""OCSF schema validation: is a normalized event a valid OCSF event of its class? (SPEC §5)

Here: the pinned OCSF version, `validate(event)`, the per-class validator cache, and the wording of
schema failures. Not here: producing OCSF events (normalizers/) or deciding what happens to an
event that fails (service.py dead-letters it with reason `validation_failed`).

Schemas are not written by hand: the JSON Schema of each class comes from the `ocsf-json-schema`
package, compiled by jsonschema-rs on first use and cached.

Version: OCSF_VERSION is pinned to 1.5.0, the floor SPEC §5 sets. It has every class and
attribute the built-in normalizers emit, and storing events of the oldest accepted release keeps
them readable by every consumer that accepts 1.5 or later. The package ships 1.0 to 1.8; moving
up is a one-line change here, checked by the tests (they compile every class of the release).

Profile policy: OCSF profiles (cloud, security_control, datetime, host, ...) add attributes to a
class, and an attribute of a profile that is not enabled is rejected as unexpected. The profiles
enabled for an event are exactly those it declares in `metadata.profiles` (the OCSF way of saying
which profiles an event uses), compared case-insensitively. Names the pinned schema does not know
are ignored: they cannot add attributes, and ignoring them keeps the validator cache bounded.
Enabling a profile also makes its required attributes required (e.g. `cloud` with the cloud
profile). Events are validated against the pinned version whatever `metadata.version` says.

Validators are built lazily, once per (class_uid, enabled profiles), under a lock, and kept in a
bounded cache. Building one takes 5-25 ms; checking a valid event takes a few microseconds.
"""

from __future__ import annotations

import logging
import math
import reprlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

from telhawk_ingest.errors import SchemaError

OCSF_VERSION = "1.5.0"

# Each (class, profile set) costs one compiled validator; events choose their profiles, so the
# number of combinations is only bounded by this cap. Real traffic uses a handful.
MAX_CACHED_VALIDATORS = 256
# Distinct metadata.profiles lists remembered; each entry is a few short strings.
MAX_CACHED_PROFILE_LISTS = 1024

log = logging.getLogger(__name__)

_short = reprlib.Repr()
_short.maxstring = 80
_short.maxother = 80
_short.maxdict = 4
_short.maxlist = 4


@dataclass(frozen=True, slots=True)
class _Compiled:
    validator: Any  # jsonschema_rs validator; the package exposes no common base type
    schema: dict[str, Any]  # kept to explain failures: titles and constraint lists
    build_seconds: float


@dataclass(frozen=True, slots=True)
class _Catalog:
    """The pinned OCSF release, loaded once: what each class and object is called and holds."""

    embedded: OcsfJsonSchemaEmbedded
    class_names: dict[int, str]
    class_captions: dict[int, str]  # class_uid -> its caption, e.g. 4001 -> "Network Activity"
    profiles: frozenset[str]
    # attribute name -> profile, per class name and per object slug (as used under $defs)
    class_attr_profiles: dict[str, dict[str, str]]
    object_attr_profiles: dict[str, dict[str, str]]


def _attr_profiles(definition: dict[str, Any]) -> dict[str, str]:
    return {
        name: attr["profile"]
        for name, attr in definition.get("attributes", {}).items()
        if attr.get("profile")
    }


def _load_catalog() -> _Catalog:
    raw = get_ocsf_schema(OCSF_VERSION)
    profiles: set[str] = set()
    for definition in (*raw["classes"].values(), *raw["objects"].values()):
        profiles.update(definition.get("profiles") or ())
        profiles.update(_attr_profiles(definition).values())
    return _Catalog(
        embedded=OcsfJsonSchemaEmbedded(raw),
        class_names={definition["uid"]: name for name, definition in raw["classes"].items()},
        class_captions={definition["uid"]: definition["caption"] for definition in raw["classes"].values()},
        profiles=frozenset(p.lower() for p in profiles),
        class_attr_profiles={name: _attr_profiles(d) for name, d in raw["classes"].items()},
        object_attr_profiles={
            name.replace("/", "_"): _attr_profiles(d) for name, d in raw["objects"].items()
        },
    )


class OcsfValidator:
    """Validates events against the pinned OCSF release; safe to share between threads."""

    def __init__(self, max_cached: int = MAX_CACHED_VALIDATORS) -> None:
        self._lock = threading.Lock()
        self._catalog: _Catalog | None = None
        self._compiled: dict[tuple[int, tuple[str, ...]], _Compiled] = {}
        self._max_cached = max_cached
        # metadata.profiles as declared -> the enabled profiles it names (see _enabled_profiles).
        self._profiles: dict[tuple[Any, ...], tuple[str, ...]] = {}
        # _ready_key(event) -> its validator, once `_validate` found it for such an event.
        self._ready: dict[tuple[Any, ...], _Compiled] = {}

    def validate(self, event: Any) -> None:
        """Return if `event` is a valid OCSF event of its class, else raise SchemaError."""
        # The common case first: an event whose class and declared profiles were seen before.
        if type(event) is dict and (key := _ready_key(event)) is not None:
            try:
                compiled = self._ready.get(key)
            except TypeError:  # an unhashable profile entry: the full check explains it
                compiled = None
            if compiled is not None:
                try:
                    if compiled.validator.is_valid(event):
                        return
                except ValueError:
                    pass  # not JSON: the full check below says so
        self._validate(event)

    def _validate(self, event: Any) -> None:
        if not isinstance(event, dict):
            raise SchemaError(
                f"event: expected a JSON object, got {type(event).__name__}", details={"path": ""}
            )
        class_uid = event.get("class_uid")
        if class_uid is None:
            raise SchemaError("class_uid: missing", details={"path": "class_uid"})
        # bool is an int in Python but not in JSON.
        if not isinstance(class_uid, int) or isinstance(class_uid, bool):
            raise SchemaError(
                f"class_uid: {_short.repr(class_uid)} is not an integer", details={"path": "class_uid"}
            )
        catalog = self._catalog or self._load()
        if class_uid not in catalog.class_names:
            raise SchemaError(
                f"class_uid: {class_uid} is not an OCSF {OCSF_VERSION} class",
                details={"path": "class_uid"},
            )
        profiles = self._enabled_profiles(event, catalog.profiles)
        compiled = self._compiled.get((class_uid, profiles)) or self._build(class_uid, profiles)
        self._remember(event, compiled)
        try:
            if compiled.validator.is_valid(event):
                return
            errors = list(compiled.validator.iter_errors(event))
        except ValueError as exc:  # a value that is not JSON (a set, bytes, ...)
            raise SchemaError(f"event: cannot be checked as JSON: {exc}", details={"path": ""}) from exc
        first = min(errors, key=lambda err: _document_order(event, err))
        path, text = _explain(first, event, compiled.schema, catalog, class_uid, profiles)
        raise SchemaError(
            f"{path}: {text}" if path else text,
            details={"path": path, "class_uid": class_uid, "profiles": list(profiles)},
        )

    def _enabled_profiles(self, event: dict[str, Any], known: frozenset[str]) -> tuple[str, ...]:
        """`_enabled_profiles`, remembered per declared list: producers repeat the same one, and
        lower-casing, filtering and sorting it was a quarter of a valid event's validation."""
        metadata = event.get("metadata")
        declared = metadata.get("profiles") if isinstance(metadata, dict) else None
        if type(declared) is not list:
            return _enabled_profiles(event, known)
        try:
            key = tuple(declared)
            profiles = self._profiles.get(key)
        except TypeError:  # an unhashable entry (an object): the schema reports it
            return _enabled_profiles(event, known)
        if profiles is None:
            profiles = _enabled_profiles(event, known)
            if len(self._profiles) >= MAX_CACHED_PROFILE_LISTS:
                self._profiles.clear()  # rare: only a producer varying its list would get here
            self._profiles[key] = profiles
        return profiles

    def _remember(self, event: dict[str, Any], compiled: _Compiled) -> None:
        """Key `validate`'s first look-up for events like this one (`_ready_key`)."""
        key = _ready_key(event)
        try:
            hash(key)
        except TypeError:
            return
        if key is None:
            return
        if len(self._ready) >= MAX_CACHED_PROFILE_LISTS:
            self._ready.clear()  # rare: only producers varying their lists would get here
        self._ready[key] = compiled

    def build_times(self) -> dict[tuple[int, tuple[str, ...]], float]:
        """Seconds spent building each cached validator, keyed by (class_uid, profiles)."""
        return {key: compiled.build_seconds for key, compiled in self._compiled.items()}

    def _load(self) -> _Catalog:
        with self._lock:
            if self._catalog is None:
                self._catalog = _load_catalog()
            return self._catalog

    def _build(self, class_uid: int, profiles: tuple[str, ...]) -> _Compiled:
        key = (class_uid, profiles)
        with self._lock:
            # Another thread may have built it while this one waited for the lock.
            if key in self._compiled:
                return self._compiled[key]
            assert self._catalog is not None
            started = time.perf_counter()
            name = self._catalog.class_names[class_uid]
            schema = self._catalog.embedded.get_class_schema(name, list(profiles))
            compiled = _Compiled(jsonschema_rs.validator_for(schema), schema, time.perf_counter() - started)
            if len(self._compiled) >= self._max_cached:
                # Oldest first; readers never lock, and a dict pop is atomic for them.
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[key] = compiled
        log.info(
            "built OCSF %s validator for class_uid=%d profiles=%s in %.1f ms",
            OCSF_VERSION, class_uid, list(profiles), compiled.build_seconds * 1000,
        )
        return compiled


_default = OcsfValidator()


def validate(event: dict[str, Any]) -> None:
    """Validate against the OCSF schema of `event["class_uid"]`; raise SchemaError naming the path."""
    _default.validate(event)


def class_name(class_uid: int) -> str | None:
    """The caption of class `class_uid` in the pinned version (4001 -> "Network Activity"), None
    when that version has no such class."""
    return _default._load().class_captions.get(class_uid)


def build_times() -> dict[tuple[int, tuple[str, ...]], float]:
    """Seconds spent building each validator the shared instance holds."""
    return _default.build_times()


def _ready_key(event: dict[str, Any]) -> tuple[Any, ...] | None:
    """`class_uid` and `metadata.profiles` as declared (a list's entries as a tuple, None when
    there is no such list or no metadata), which decide the validator; None, never cached, for an
    event whose class or metadata is not a plain int or object: the full check explains those."""
    metadata = event.get("metadata")
    if metadata is None:
        declared = None
    elif type(metadata) is dict:
        declared = metadata.get("profiles")
    else:
        return None
    class_uid = event.get("class_uid")
    if type(class_uid) is not int:
        return None
    if type(declared) is list:
        return (class_uid, tuple(declared))
    return (class_uid, None) if declared is None else None


def _enabled_profiles(event: dict[str, Any], known: frozenset[str]) -> tuple[str, ...]:
    metadata = event.get("metadata")
    declared = metadata.get("profiles") if isinstance(metadata, dict) else None
    if not isinstance(declared, list):
        return ()  # a malformed metadata.profiles is reported by the schema itself
    return tuple(sorted({p.lower() for p in declared if isinstance(p, str) and p.lower() in known}))


# --- explaining a failure -------------------------------------------------------------------------

_LAST = (math.inf, "")  # sorts an object-level failure after the failures of its attributes


def _document_order(event: Any, err: Any) -> tuple[tuple[float, str], ...]:
    """Where the failure sits in the event as written, so "first" means first in the document."""
    key: list[tuple[float, str]] = []
    node = event
    for segment in err.instance_path:
        if isinstance(node, dict):
            key.append((_position(node, segment), ""))
            node = node.get(segment)
        elif isinstance(node, list) and isinstance(segment, int):
            key.append((segment, ""))
            node = node[segment] if segment < len(node) else None
        else:
            key.append((0, ""))
    kind = type(err.kind).__name__
    if kind == "Required" and isinstance(node, dict):
        key.append((len(node), str(err.kind.property)))
    elif kind == "AdditionalProperties" and isinstance(node, dict):
        key.append(min((_position(node, name), name) for name in err.kind.unexpected))
    elif kind in {"AnyOf", "OneOfNotValid", "OneOfMultipleValid"}:
        key.append(_LAST)
    return tuple(key)


def _position(node: dict[str, Any], name: Any) -> int:
    for index, key in enumerate(node):
        if key == name:
            return index
    return len(node)


def _join(path: list[Any]) -> str:
    out = ""
    for segment in path:
        out += f"[{segment}]" if isinstance(segment, int) else (f".{segment}" if out else str(segment))
    return out


def _subschema(schema: dict[str, Any], schema_path: list[Any]) -> Any:
    node: Any = schema
    for segment in schema_path:
        try:
            node = node[segment]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _explain(
    err: Any,
    event: Any,
    schema: dict[str, Any],
    catalog: _Catalog,
    class_uid: int,
    profiles: tuple[str, ...],
) -> tuple[str, str]:
    """(attribute path, what is wrong with it) for one jsonschema-rs error.

    Worded here rather than taken from jsonschema-rs, whose messages embed the whole offending
    object for some keywords and change wording between releases.
    """
    kind = err.kind
    name = type(kind).__name__
    path = list(err.instance_path)
    value = _short.repr(err.instance)
    keyword_path = list(err.schema_path)
    owner = _subschema(schema, keyword_path[:-1]) or {}  # the (sub)schema holding the keyword
    if name == "Required":
        return _join([*path, kind.property]), "required attribute is missing"
    if name == "AdditionalProperties":
        node = _subschema(event, path)
        attr = min(kind.unexpected, key=lambda n: (_position(node, n) if isinstance(node, dict) else 0, n))
        text = f"is not an attribute of {owner.get('title', 'this object')} in OCSF {OCSF_VERSION}"
        profile = _profile_of(attr, keyword_path, catalog, class_uid)
        if profile and profile not in profiles:
            text += f"; it belongs to the '{profile}' profile, which metadata.profiles does not list"
        return _join([*path, attr]), text
    if name == "Type":
        return _join(path), f"{value} is not of type {' or '.join(repr(t) for t in kind.types)}"
    if name == "Enum":
        options = list(kind.options)
        try:
            options.sort()
        except TypeError:  # mixed types: keep the schema's order
            pass
        return _join(path), f"{value} is not one of {options}"
    if name == "Constant":
        return _join(path), f"{value} is not {kind.expected_value!r}"
    if name == "Pattern":
        return _join(path), f"{value} is not a valid {owner.get('title') or 'value'}"
    if name == "Minimum":
        return _join(path), f"{value} is less than the minimum of {kind.limit}"
    if name == "Maximum":
        return _join(path), f"{value} is greater than the maximum of {kind.limit}"
    if name == "MaxLength":
        return _join(path), f"{value} is longer than {kind.limit} characters"
    if name in {"AnyOf", "OneOfNotValid", "OneOfMultipleValid"}:
        # OCSF constraints (at_least_one, just_one) compile to [{"required": [attr]}, ...].
        options = _subschema(schema, keyword_path) or []
        names = [o["required"][0] for o in options if isinstance(o, dict) and o.get("required")]
        if len(names) == len(options) and names:
            listed = ", ".join(names)
            if name == "AnyOf":
                return _join(path), f"at least one of {listed} is required"
            if name == "OneOfNotValid":
                return _join(path), f"exactly one of {listed} is required"
            return _join(path), f"only one of {listed} may be given"
    message = str(err.message)
    return _join(path), message if len(message) <= 200 else message[:197] + "..."


def _profile_of(attr: str, keyword_path: list[Any], catalog: _Catalog, class_uid: int) -> str | None:
    """The profile that defines `attr` where it was rejected, if it is a profile attribute."""
    if keyword_path[-3:-2] == ["$defs"]:
        return catalog.object_attr_profiles.get(str(keyword_path[-2]), {}).get(attr)
    if keyword_path == ["additionalProperties"]:
        return catalog.class_attr_profiles.get(catalog.class_names[class_uid], {}).get(attr)
    return None

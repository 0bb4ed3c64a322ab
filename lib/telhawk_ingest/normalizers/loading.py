"""The registry a service runs with: the built-ins, then plugins, then configured aliases.

Here: `load_registry(settings)`, reading the `telhawk_ingest.normalizers` entry-point group
(`importlib.metadata`) and applying `normalizers.aliases`. Not here: the registry itself and the
built-ins (`__init__.py`), or what a plugin package looks like (README "Adding a normalizer",
examples/telhawk-normalizer-example).

Rules, so that nothing already routed changes behind an operator's back:
- Plugins are loaded in the order of (distribution name, entry point name), whatever the order
  of sys.path. Each entry point names a `NormalizerPlugin`; its exact source types join the
  exact names, its patterns are tried after the built-in patterns and the patterns of plugins
  loaded before it.
- A plugin only adds routes. An exact source type that already routes (a built-in name, one a
  built-in pattern matches, or an earlier plugin's), or a pattern already registered for the
  format, refuses the whole entry point: it routes nothing.
- An entry point that cannot be imported, names something that is not a `NormalizerPlugin`, or
  declares nothing valid is refused the same way. A refused entry point is logged as an error
  and listed in `Registry.plugin_failures` (GET /api/v1/normalizers); ingest runs without it,
  and its source types keep failing into the DLQ with `no normalizer registered`.
- An alias (`normalizers.aliases: {cisco_asa: "cisco:asa"}`) is an exact name that takes the
  route its target takes, for each format the target routes (an exact name or a pattern
  match, built in or plugin). Its target must route (not be another alias), and its own name
  must not: either mistake raises ConfigError naming `normalizers.aliases.<name>` at start-up.
  One exception keeps a broken plugin from stopping ingest: while some plugin failed to load, an
  alias whose target routes nothing (perhaps that plugin's source type) is left out, logged as
  an error and listed in `Registry.alias_failures`, and the service starts without it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points

from telhawk_ingest.config import NormalizerSettings
from telhawk_ingest.errors import ConfigError
from telhawk_ingest.normalizers import (
    FORMATS,
    AliasFailure,
    NormalizerPlugin,
    Origin,
    PluginFailure,
    Registry,
    builtin_registry,
)

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "telhawk_ingest.normalizers"


def load_registry(settings: NormalizerSettings, plugins: Iterable[EntryPoint] | None = None) -> Registry:
    """The built-ins, the plugins (`plugins`, else the installed entry points, unless
    `normalizers.load_plugins` is false), then the aliases. Raises ConfigError for a bad alias;
    a bad plugin is reported, never raised."""
    registry = builtin_registry()
    if settings.load_plugins:
        add_plugins(registry, discover() if plugins is None else plugins)
    add_aliases(registry, settings.aliases)
    return registry


def discover() -> list[EntryPoint]:
    """The installed entry points of ENTRY_POINT_GROUP in load order (module docstring)."""
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=_load_order)


def _load_order(ep: EntryPoint) -> tuple[str, str]:
    return (_distribution(ep)[0] or "").lower().replace("_", "-"), ep.name


def _distribution(ep: EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def add_plugins(registry: Registry, plugins: Iterable[EntryPoint]) -> None:
    """Register each entry point's normalizer, or record why it was refused (module docstring)."""
    for ep in plugins:
        name, version = _distribution(ep)
        origin = Origin("plugin", entry_point=ep.name, distribution=name, version=version)
        try:
            _add_plugin(registry, ep, origin)
        except (Exception, SystemExit) as exc:  # a plugin must not stop the service: SystemExit too
            error = str(exc) or type(exc).__name__
            if not isinstance(exc, _Refused):
                error = f"cannot load {ep.value}: {type(exc).__name__}: {error}"
            log.error("normalizer plugin %s (distribution %s) not loaded: %s", ep.name, name, error)
            registry.plugin_failures.append(PluginFailure(ep.name, name, error))


class _Refused(Exception):
    """A plugin that loaded but declares something this registry will not take."""


def _add_plugin(registry: Registry, ep: EntryPoint, origin: Origin) -> None:
    plugin = ep.load()
    if not isinstance(plugin, NormalizerPlugin):
        raise _Refused(f"{ep.value} is a {type(plugin).__name__}, expected a "
                       "telhawk_ingest.normalizers.NormalizerPlugin")
    _check(plugin)
    source_types, patterns = list(plugin.source_types), list(plugin.patterns)
    for format in plugin.formats:
        for source_type in source_types:
            taken = registry.route(format, source_type)
            if taken is not None:
                raise _Refused(f"source type {source_type!r} (format {format}) is already routed by "
                               f"{taken.origin.describe()} ({taken.match} {taken.source_type!r}); "
                               "a plugin only adds source types")
        for pattern in patterns:
            if any(r.match == "pattern" and r.format == format and r.source_type == pattern
                   for r in registry.routes()):
                raise _Refused(f"pattern {pattern!r} (format {format}) is already registered")
    classes = list(plugin.ocsf_classes)
    for format in plugin.formats:
        for source_type in source_types:
            registry.register(format, source_type, plugin.normalize, origin=origin, ocsf_classes=classes)
        for pattern in patterns:
            registry.register_pattern(format, pattern, plugin.normalize, origin=origin, ocsf_classes=classes)


def _check(plugin: NormalizerPlugin) -> None:
    """_Refused naming the first thing wrong with what a plugin declares."""
    from telhawk_ingest import ocsf  # the OCSF catalog loads only when a plugin is there to check

    if not callable(plugin.normalize):
        raise _Refused("normalize is not callable")
    for label, values in (("source_types", plugin.source_types), ("patterns", plugin.patterns),
                          ("formats", plugin.formats)):
        if isinstance(values, str) or not all(isinstance(v, str) and v.strip() for v in values):
            raise _Refused(f"{label} must be a list of non-empty strings, got {values!r}")
    if not plugin.source_types and not plugin.patterns:
        raise _Refused("declares no source_types and no patterns")
    unknown = [f for f in plugin.formats if f not in FORMATS]
    if unknown or not plugin.formats:
        raise _Refused(f"formats must be some of {', '.join(FORMATS)}, got {list(plugin.formats)!r}")
    if not plugin.ocsf_classes:
        raise _Refused("declares no ocsf_classes")
    for uid in plugin.ocsf_classes:
        if type(uid) is not int or ocsf.class_name(uid) is None:
            raise _Refused(f"ocsf_classes: {uid!r} is not a class_uid of OCSF {ocsf.OCSF_VERSION}")


def add_aliases(registry: Registry, aliases: Mapping[str, str]) -> None:
    """Register each alias as an exact name taking its target's route (module docstring).
    ConfigError, registering no alias, when one is wrong."""
    resolved = []
    for name, target in aliases.items():
        key = f"normalizers.aliases.{name}"
        taken = [r for r in (registry.route(f, name) for f in FORMATS) if r is not None]
        if taken:
            raise ConfigError(f"{key}: {name!r} already has a normalizer ({taken[0].origin.describe()}, "
                              f"{taken[0].match} {taken[0].source_type!r}); an alias only names a "
                              "source type that has none")
        routes = {f: r for f in FORMATS if (r := registry.route(f, target)) is not None}
        if not routes:
            if target in aliases:
                raise ConfigError(f"{key}: {target!r} is itself an alias; name the source type it "
                                  f"stands for, {aliases[target]!r}")
            known = sorted({r.source_type for r in registry.routes()})
            error = f"{key}: {target!r} is not a registered source type; registered: {', '.join(known)}"
            if not registry.plugin_failures:
                raise ConfigError(error)
            failed = ", ".join(sorted({f.distribution or f.entry_point for f in registry.plugin_failures}))
            error += f" (left out: plugins that failed to load may provide it: {failed})"
            log.error("normalizer alias not registered: %s", error)
            registry.alias_failures.append(AliasFailure(name, target, error))
            continue
        resolved.append((name, target, routes))
    for name, target, routes in resolved:
        for format, route in routes.items():
            registry.register(format, name, route.normalizer, origin=Origin("alias", alias_of=target),
                              ocsf_classes=route.ocsf_classes)

"""YAML configuration: ``_base_`` inheritance, command-line overrides, provenance-aware errors.

A config file is a YAML mapping. ``_base_`` (a path or a list of paths, relative to the file) names files
whose content is merged first, in order; the file's own keys are then merged on top. Mappings merge key by
key; every other value (lists included) replaces. A mapping with ``_replace_: true`` replaces the inherited
mapping instead of merging into it.

Every key remembers the file and line it came from, so that the components that consume a section
(``build_from_cfg`` / ``check_keys``) can report a typo as ``configs/x.yaml:12: model.head.reg_mx: unknown
key ... did you mean 'reg_max'?``.

Overrides (``--opts``) are ``dotted.key=value`` strings; the value is parsed as YAML (``8`` is an int,
``[1, 2]`` a list, ``null`` None). The key must already exist (so a typo is an error); prefix it with ``+``
to add a new key.
"""

from __future__ import annotations

import collections.abc
import copy
import difflib
import inspect
import math
import re
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from gfldet.errors import GfldetError

__all__ = ["Config", "ConfigError", "load_config", "apply_overrides", "annotated_yaml", "dump_config", "build_from_cfg",
           "check_keys"]

BASE_KEY = "_base_"
REPLACE_KEY = "_replace_"


class ConfigError(GfldetError, ValueError):
    """A configuration problem; the message names the file, line and dotted key where known."""


def nearest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``name`` (for "did you mean" hints), or None if nothing is close."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return matches[0] if matches else None


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    guess = nearest(name, candidates)
    return f"; did you mean '{guess}'?" if guess else ""


class Config(dict):
    """A dict with attribute access whose nested mappings are Configs and whose keys know their origin.

    ``cfg.model.head.reg_max`` equals ``cfg["model"]["head"]["reg_max"]``. ``cfg.where("reg_max")`` gives
    ``"configs/gfl.yaml:14 (model.head.reg_max)"`` for error messages.
    """

    def __init__(self, data: Mapping | None = None, *, path: str = "", origins: Mapping | None = None):
        super().__init__()
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_origins", dict(origins or {}))
        for key, value in (data or {}).items():
            self[key] = value

    # -- dict / attribute access -------------------------------------------------------------------
    def __setitem__(self, key, value):
        if isinstance(value, Mapping) and not isinstance(value, Config):
            value = Config(value, path=self.dotted(key))
        elif isinstance(value, Config) and value._path != self.dotted(key):
            value = Config(value, path=self.dotted(key), origins=value._origins)
        super().__setitem__(key, value)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"{self.where()}: no key '{self.dotted(name)}'{_did_you_mean(name, self.keys())}"
            ) from None

    def __setattr__(self, name: str, value):
        self[name] = value

    def __delattr__(self, name: str):
        del self[name]

    def __deepcopy__(self, memo):
        return _rebuild_config(copy.deepcopy(self.to_dict(), memo), self._path, self._all_origins())

    def __reduce__(self):
        return (_rebuild_config, (self.to_dict(), self._path, self._all_origins()))

    # -- provenance -------------------------------------------------------------------------------
    def dotted(self, key: str | None = None) -> str:
        """The dotted path of this section, or of ``key`` inside it."""
        if key is None:
            return self._path
        return f"{self._path}.{key}" if self._path else str(key)

    def where(self, key: str | None = None) -> str:
        """``file:line (dotted.key)`` for ``key`` (or this section): where the value was last set."""
        origin = self._origins.get(key)
        label = self.dotted(key) or "<root>"
        return f"{origin} ({label})" if origin else label

    def set_origin(self, key: str | None, origin: str) -> None:
        self._origins[key] = origin

    def _all_origins(self) -> dict:
        origins = {(): dict(self._origins)}
        for key, value in self.items():
            if isinstance(value, Config):
                for sub, val in value._all_origins().items():
                    origins[(key,) + sub] = val
        return origins

    def _restore_origins(self, origins: Mapping) -> "Config":
        for keys, value in origins.items():
            node = self
            for k in keys:
                node = node[k]
            node._origins.update(value)
        return self

    # -- typed reads (values checked where they are read: errors name file, line, key, what was expected) ------
    def expect(self, key: str, ok: bool, expected: str) -> None:
        """Raise ``file:line (dotted.key): expected <expected>, got <value>`` unless ``ok``."""
        if ok:
            return
        if key not in self:
            raise ConfigError(f"{self.where()}: {self.dotted(key)} is missing: expected {expected}")
        got = "null" if self[key] is None else repr(self[key])
        raise ConfigError(f"{self.where(key)}: expected {expected}, got {got}")

    def get_int(self, key: str, *, low: int | None = None, optional: bool = False) -> int | None:
        """``self[key]``: an integer >= ``low`` (or null when ``optional``)."""
        value = self.get(key)
        if value is None and optional and key in self:
            return None
        ok = _is_int(value) and (low is None or value >= low)
        self.expect(key, ok, "an integer" + (f" >= {low}" if low is not None else "") + _or_null(optional))
        return value

    def get_float(self, key: str, *, low: float | None = None, high: float | None = None, positive: bool = False,
                  optional: bool = False) -> float | None:
        """``self[key]`` as a float: a number (YAML 1.1 reads ``1e-3`` as a string: such strings count) within
        ``[low, high]``, > 0 when ``positive``, or null when ``optional``."""
        value = self.get(key)
        if value is None and optional and key in self:
            return None
        number = _as_float(value)
        ok = number is not None and (low is None or number >= low) and (high is None or number <= high)
        ok = ok and (not positive or number > 0)
        bounds = ["> 0" if positive else "", f">= {low}" if low is not None and high is None else "",
                  f"<= {high}" if high is not None and low is None else "",
                  f"in [{low}, {high}]" if None not in (low, high) else ""]
        self.expect(key, ok, " ".join(["a number", *filter(None, bounds)]) + _or_null(optional))
        return number

    def get_bool(self, key: str) -> bool:
        """``self[key]``: true or false."""
        self.expect(key, isinstance(self.get(key), bool), "true or false")
        return self[key]

    def get_choice(self, key: str, choices: Iterable) -> Any:
        """``self[key]``: one of ``choices`` (an unquoted YAML ``off``/``no``/``on``/``yes`` is a boolean: quote it)."""
        choices = list(choices)
        value = self.get(key)
        hint = " (YAML reads unquoted on/off/yes/no as true/false: quote the value)" if isinstance(value, bool) else ""
        self.expect(key, value in choices and not isinstance(value, bool),
                    f"one of {', '.join(map(str, choices))}{hint}")
        return value

    def get_ints(self, key: str, *, low: int | None = None, increasing: bool = False) -> list[int]:
        """``self[key]``: a list of integers >= ``low``, in increasing order when ``increasing``."""
        value = self.get(key)
        ok = isinstance(value, (list, tuple)) and all(_is_int(v) and (low is None or v >= low) for v in value)
        ok = ok and (not increasing or list(value) == sorted(value))
        expected = ("a list of " + ("increasing " if increasing else "") + "integers"
                    + (f" >= {low}" if low is not None else "") + ", e.g. [8, 11]")
        self.expect(key, ok, expected)
        return list(value)

    # -- conversion -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain nested dicts and lists, also inside lists (for YAML dumps and checkpoints)."""
        return {k: _plain(v) for k, v in self.items()}

    def copy(self) -> "Config":
        return self.__deepcopy__({})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_float(value) -> float | None:
    """``value`` as a finite float (ints, floats and numeric strings), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _or_null(optional: bool) -> str:
    return " or null" if optional else ""


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _rebuild_config(data, path, origins):
    return Config(data, path=path)._restore_origins(origins)


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings remember the source line of each key (PyYAML offers no such mode)."""

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep=deep)
        lines = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            lines[key] = key_node.start_mark.line + 1
        mapping = _LinedDict(mapping)
        mapping.lines = lines
        return mapping


class _LinedDict(dict):
    lines: dict


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, lambda loader, node: loader.construct_mapping(node, deep=True)
)


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        loc = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{loc}: invalid YAML: {problem}") from None
    if data is None:
        return _LinedDict()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a YAML mapping at the top level, got {type(data).__name__}")
    return data


def _to_config(data: Mapping, file: Path, path: str = "") -> Config:
    cfg = Config(path=path)
    lines = getattr(data, "lines", {})
    for key, value in data.items():
        origin = f"{file}:{lines[key]}" if key in lines else str(file)
        cfg[key] = _located(value, file, cfg.dotted(key), origin)
        cfg.set_origin(key, origin)
    return cfg


def _located(value, file: Path, path: str, origin: str):
    """YAML mappings (also inside lists) -> Configs that know their file and lines; other values unchanged."""
    if isinstance(value, Mapping):
        section = _to_config(value, file, path)
        section.set_origin(None, origin)
        return section
    if isinstance(value, list):
        return [_located(item, file, f"{path}.{i}", origin) for i, item in enumerate(value)]
    return value


def _merge(base: Config, override: Config) -> Config:
    """Deep-merge ``override`` into ``base`` in place (mappings merge, other values replace)."""
    for key, value in override.items():
        if key == REPLACE_KEY:
            continue
        replace = isinstance(value, Config) and value.pop(REPLACE_KEY, False) is True
        if isinstance(value, Config) and isinstance(base.get(key), Config) and not replace:
            _merge(base[key], value)
        else:
            base[key] = _without_replace_markers(value)
        base.set_origin(key, override._origins.get(key))
    return base


def _without_replace_markers(value):
    """``value`` with every nested ``_replace_`` key dropped (there is nothing below a new section to replace)."""
    if isinstance(value, Config):
        value.pop(REPLACE_KEY, None)
        for key, item in value.items():
            value[key] = _without_replace_markers(item)
    elif isinstance(value, list):
        return [_without_replace_markers(item) for item in value]
    return value


def _load_file(path: Path, chain: tuple[Path, ...]) -> Config:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in chain + (path,))
        raise ConfigError(f"circular _base_ inheritance: {cycle}")
    raw = _read_yaml(path)
    cfg = _to_config(raw, _display_path(path))
    bases = cfg.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{cfg.where(BASE_KEY)}: _base_ must be a path or a list of paths, got {bases!r}")
    merged = Config()
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            line = getattr(raw, "lines", {}).get(BASE_KEY, "?")
            raise ConfigError(f"{_display_path(path)}:{line}: _base_ file not found: {base} (looked at {base_path})")
        _merge(merged, _load_file(base_path, chain + (path,)))
    return _merge(merged, cfg)


def _display_path(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config with its ``_base_`` chain, then apply ``key.sub=value`` overrides."""
    cfg = _load_file(Path(path), ())
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """Apply ``dotted.key=value`` strings (value parsed as YAML) in place; ``+dotted.key=value`` adds a key."""
    for index, item in enumerate(overrides):
        origin = f"override #{index + 1} '{item}'"
        if "=" not in item:
            raise ConfigError(f"{origin}: expected 'key.sub=value'")
        dotted, text = item.split("=", 1)
        add = dotted.startswith("+")
        keys = dotted.lstrip("+").strip().split(".")
        if not all(keys):
            raise ConfigError(f"{origin}: an empty key in '{dotted}'; expected 'key.sub=value'")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{origin}: value is not valid YAML: {err}") from None
        node = cfg
        for depth, key in enumerate(keys):
            last = depth == len(keys) - 1
            if isinstance(node, list):
                node = _override_list_item(node, key, value, last, origin)
                continue
            if not isinstance(node, Config):
                raise ConfigError(f"{origin}: '{'.'.join(keys[:depth])}' is a {type(node).__name__}, not a mapping")
            if key not in node and not add:
                raise ConfigError(
                    f"{origin}: no key '{node.dotted(key)}' to override{_did_you_mean(key, node.keys())} "
                    f"(prefix with '+' to add a new key)"
                )
            if last:
                node[key] = value
                node.set_origin(key, origin)
            else:
                if key not in node:
                    node[key] = Config()
                    node.set_origin(key, origin)
                elif isinstance(node[key], list):  # an item changes: the list's origin says so
                    node.set_origin(key, f"{node._origins.get(key, 'base')}; item {keys[depth + 1]} set by {origin}")
                node = node[key]
    return cfg


def _override_list_item(node: list, key: str, value: Any, last: bool, origin: str):
    if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
        raise ConfigError(f"{origin}: '{key}' is not a valid index of a list of length {len(node)}")
    if last:
        node[int(key)] = value
        return value
    if isinstance(node[int(key)], Mapping) and not isinstance(node[int(key)], Config):  # a list an override set
        node[int(key)] = Config(node[int(key)])
    return node[int(key)]


def annotated_yaml(cfg: Config, indent: int = 0, inherited: str | None = None) -> str:
    """The merged config as YAML, each key followed by ``# file:line`` (or the override) that last set it; a key
    without its own origin (inside a section an override set whole) shows its section's.

    Keys and values are written in YAML's flow style, which reads back unchanged (``yaml.safe_load`` of the text
    gives ``cfg.to_dict()``).
    """
    if not cfg and not indent:
        return "{}"
    lines = []
    for key, value in cfg.items():
        origin = cfg._origins.get(key) or inherited
        comment = f"  # {' '.join(str(origin).split())}" if origin else ""  # one line, whatever the override held
        if isinstance(value, Config) and value:
            lines.append(f"{' ' * indent}{_flow_yaml(key)}:{comment}")
            lines.append(annotated_yaml(value, indent + 2, origin))
        else:
            lines.append(f"{' ' * indent}{_flow_yaml(key)}: {_flow_yaml(_plain(value))}{comment}")
    return "\n".join(lines)


def _flow_yaml(value) -> str:
    """``value`` as one line of YAML (``[1, .inf]``, ``{type: Resize, p: 0.5}``, ``'off'``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31, sort_keys=False, allow_unicode=True).strip()
    return text.removesuffix("\n...").strip()


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the merged config as plain YAML (the form saved in a work dir)."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# ------------------------------------------------------------------------------------------------
# Building components from config sections
# ------------------------------------------------------------------------------------------------
def check_keys(cfg: Mapping, allowed: Iterable[str], *, where: str = "") -> None:
    """Raise ConfigError for the first key of ``cfg`` not in ``allowed``, naming its origin and the nearest key."""
    allowed = list(allowed)
    for key in cfg:
        if key not in allowed:
            loc = cfg.where(key) if isinstance(cfg, Config) else repr(key)
            ctx = f" for {where}" if where else ""
            raise ConfigError(
                f"{loc}: unknown key '{key}'{ctx}{_did_you_mean(key, allowed)} (valid keys: {', '.join(allowed)})"
            )


def build_from_cfg(cfg: Mapping, registry: Mapping[str, Callable], *, where: str = "", consumed: Sequence[str] = (),
                   **extra) -> Any:
    """Instantiate ``registry[cfg['type']]`` with the other keys of ``cfg`` (and ``extra``) as keyword arguments.

    ``consumed``: keys of ``cfg`` that the caller reads itself; they are valid keys but not passed on.

    Unknown types, unknown keys, missing required arguments and values of the wrong basic type
    (int/float/bool/str per the constructor's annotations) raise ConfigError naming file, line and key.
    """
    cfg = cfg if isinstance(cfg, Config) else Config(cfg)
    section = where or cfg.dotted() or "config section"
    if "type" not in cfg:
        raise ConfigError(f"{cfg.where()}: {section} needs a 'type' key, one of: {', '.join(registry)}")
    name = cfg["type"]
    if name not in registry:
        raise ConfigError(
            f"{cfg.where('type')}: unknown type '{name}'{_did_you_mean(name, registry)} (valid: {', '.join(registry)})"
        )
    factory = registry[name]
    kwargs = {k: v for k, v in cfg.items() if k != "type" and k not in consumed}
    params = inspect.signature(factory).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepted = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not accepts_any:
        check_keys(cfg, ["type", *consumed] + [n for n in accepted if n not in extra],
                   where=f"{section} (type {name})")
    missing = [
        n for n in accepted if params[n].default is inspect.Parameter.empty and n not in kwargs and n not in extra
    ]
    if missing:
        raise ConfigError(f"{cfg.where()}: {section} (type {name}) is missing required key(s): {', '.join(missing)}")
    _check_basic_types(cfg, kwargs, factory, f"{section} (type {name})")
    try:
        return factory(**kwargs, **extra)
    except ConfigError:
        raise
    except ValueError as err:  # a constructor's check of its values: say where they were set
        key = re.match(r"\w*", str(err)).group()  # constructors name the offending argument first
        location = cfg.where(key if key in cfg else None) if cfg.dotted() else section
        raise ConfigError(f"{location}: {err}") from None


_BASIC_TYPES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _check_basic_types(cfg: Config, kwargs: Mapping, factory: Callable, section: str) -> None:
    """Reject e.g. ``reg_max: "16"`` or ``topk: 9.5`` before they fail deep inside a model."""
    try:
        hints = typing.get_type_hints(factory if inspect.isfunction(factory) else factory.__init__)
    except Exception:  # unresolvable annotations: nothing to check against
        return
    for key, value in kwargs.items():
        hint = hints.get(key)
        if value is None and _is_optional(hint):
            continue
        expected, item = _basic_type(hint), _list_item_type(hint)
        if expected is not None and not _is_basic(value, expected):
            raise ConfigError(
                f"{cfg.where(key)}: {section}: '{key}' must be {_BASIC_TYPES[expected]}, got {value!r}"
            )
        if item is not None and not (isinstance(value, (list, tuple)) and all(_is_basic(v, item) for v in value)):
            raise ConfigError(f"{cfg.where(key)}: {section}: '{key}' must be a list of {_PLURALS[item]}, got {value!r}")


def _is_basic(value, expected: type) -> bool:
    """``value`` is of the basic type ``expected`` (a bool is no number; an int is a float)."""
    if expected in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if expected is float else expected)


_PLURALS = {int: "integers", float: "numbers"}


def _list_item_type(hint) -> type | None:
    """``int`` / ``float`` for a ``list[...]`` or ``Sequence[...]`` hint of them (also optional), else None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if _is_optional(hint) and len(args) == 1:
        hint, args = args[0], list(typing.get_args(args[0]))
    origin = typing.get_origin(hint)
    if origin in (list, collections.abc.Sequence) and len(args) == 1 and args[0] in _PLURALS:
        return args[0]
    return None


def _basic_type(hint) -> type | None:
    if hint in _BASIC_TYPES:
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if _is_optional(hint) and len(args) == 1 and args[0] in _BASIC_TYPES:
        return args[0]
    return None


def _is_optional(hint) -> bool:
    return type(None) in typing.get_args(hint)

"""Training configuration: dataclasses <-> plain dicts, YAML/TOML files, CLI overrides, and
the diff that refuses to resume a run with a different config.

A job config is a (possibly nested) dataclass. It is resolved in three layers, later wins:
the dataclass defaults, the `--config` file, then the command-line flags that were given::

    from sarmae_cli.train.config import load_config_file, merge_config, from_dict, to_dict

    layers = merge_config(load_config_file(Path("run.yaml")), {"loop": {"lr": 2e-4}})
    cfg = from_dict(PretrainConfig, layers)          # unknown keys are refused
    resolved = to_dict(cfg)                          # saved in every checkpoint

`set_layer(["augment.speckle=0.5"], FinetuneConfig)` turns the repeatable `--set KEY=VALUE`
option into such a layer (KEY a dotted path, VALUE read as YAML: numbers, booleans, lists).

`config_diff(saved, resolved)` lists the keys that differ (dotted names), which the loop uses
to refuse `--resume` with another config.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sarmae_cli.errors import UsageError

T = TypeVar("T")


def load_config_file(path: Path | None) -> dict[str, Any]:
    """Read a YAML (`.yaml`, `.yml`) or TOML (`.toml`) config file into a dict ({} for None)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text)
        else:
            raise UsageError(f"config file {path} must end in .yaml, .yml or .toml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"config file {path} is not valid: {first}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of option: value")
    return data


def merge_config(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge dicts, later layers winning; `None` values in a layer mean 'not given'."""
    out: dict[str, Any] = {}
    for layer in layers:
        for k, v in layer.items():
            if v is None:
                continue
            if isinstance(v, dict):
                out[k] = merge_config(out[k] if isinstance(out.get(k), dict) else {}, v)
            else:
                out[k] = v
    return out


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain JSON-able dicts/lists/scalars."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a dict, recursing into dataclass-typed fields and turning
    lists into tuples where the field is a tuple. Unknown keys raise `UsageError`."""
    if not isinstance(data, dict):
        raise UsageError(f"config section {where or cls.__name__} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise _unknown_keys(unknown, known, where)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise UsageError(f"invalid config {where or cls.__name__}: {e}") from e


def _unknown_keys(unknown: list[str], known: Sequence[str], where: str, source: str = "") -> UsageError:
    """The error of config keys that a section does not have: each named with its dotted path,
    close matches suggested, then the section's known keys."""
    prefix = f"{where}." if where else ""
    close = [m for k in unknown for m in difflib.get_close_matches(k, list(known), n=2, cutoff=0.6)]
    hint = f" (did you mean {' or '.join(prefix + m for m in dict.fromkeys(close))}?)" if close else ""
    return UsageError(
        f"unknown config key(s) {', '.join(prefix + k for k in unknown)}{source}{hint}; "
        f"known{' in ' + where if where else ''}: {', '.join(sorted(known))}"
    )


def set_layer(pairs: Sequence[str] | None, cls: type | None = None) -> dict[str, Any]:
    """A config layer from `--set KEY=VALUE` pairs: KEY is a dotted path (`augment.speckle`,
    `loop.max_steps`), VALUE is read as YAML (`0.5`, `true`, `[0.85, 1.0]`, `percentile`).
    With `cls` (the job's config dataclass) every KEY is checked against its fields, so a
    typo is a usage error naming the key and its close matches; values are checked when the
    config is built (`from_dict`). A later pair for the same key wins."""
    layer: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, text = pair.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(p.strip() for p in parts):
            raise UsageError(f"--set {pair!r} must be KEY=VALUE with a dotted KEY, e.g. augment.speckle=0.5")
        parts = [p.strip() for p in parts]
        if cls is not None:
            _check_key(cls, parts, f" in --set {pair}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"--set {pair}: the value is not valid YAML ({first})") from e
        node = layer
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return layer


def _check_key(cls: type, parts: list[str], source: str) -> None:
    """Refuse a dotted key that is not a field path of the dataclass `cls`."""
    for i, part in enumerate(parts):
        where = ".".join(parts[:i])
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise UsageError(f"config key {where} has no sub-keys{source}")
        known = [f.name for f in dataclasses.fields(cls) if f.init]
        if part not in known:
            raise _unknown_keys([part], known, where, source)
        hint = typing.get_type_hints(cls)[part]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1
        cls = args[0] if optional else hint


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Convert a plain value to the annotated field type (dataclass, tuple, Path, float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where) if len(args) == 1 else value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=False))
    if hint is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError as e:
            raise UsageError(f"config {where} must be a number, got {value!r}") from e
    if hint is Path and isinstance(value, str):
        return Path(value)
    return value


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are compared as JSON text."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(to_dict(v), sort_keys=True, default=str)
    return out


def config_diff(
    old: dict[str, Any],
    new: dict[str, Any],
    ignore: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
) -> list[str]:
    """Dotted keys whose values differ between two resolved configs, as 'key: old -> new'.

    Keys equal to, or starting with, an entry of `ignore` (e.g. 'loop.num_workers') are skipped.
    A key missing from `old` (a setting added to sarmae after `old` was saved) whose new value
    is its value in `defaults` is no difference: the old run behaved that way.
    """
    a, b = flatten(old), flatten(new)
    d = flatten(defaults or {})
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == i or key.startswith(i + ".") for i in ignore):
            continue
        if key not in a and key in d and b.get(key) == d[key]:
            continue
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key, '<absent>')} -> {b.get(key, '<absent>')}")
    return out

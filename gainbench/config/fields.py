"""What a settings field declares beside itself, and the strict reading of a config against it.

A field's ``metadata`` (plain dict keys, so a dataclass outside this package declares them with
``dataclasses.field`` alone) says:

* ``role``: ``identity`` (default: what is measured, part of the run id), ``execution`` (how a
  step is computed or where the run lives) or ``presentation`` (how results are shown); only
  identity fields are hashed into the run id.
* ``neutral``: a value at which the field changes nothing the run id has ever hashed; the field
  is left out of the id while it holds it (a field added after schema version 1, or an optional
  key the shipped YAML used to omit).
* ``identity_when``: ``(other_field, value)``: the field is identity only while ``other_field``
  holds ``value`` (a tiny model's architecture means nothing to a hub checkpoint).
* ``neutral_entries``: for a free-form dict, entries left out of the id at these values.
* ``from_key``: the field is the key of a table entry (``sequence.domains.<name>``), not a key in it.
* ``choices``, ``min``, ``max``, ``positive``: checked by :func:`check_fields`.
* ``doc``: one line for the reader.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping
from functools import cache

from gainbench.errors import GainbenchError

IDENTITY, EXECUTION, PRESENTATION = "identity", "execution", "presentation"
_UNSET = object()


def setting(default=dataclasses.MISSING, *, factory=None, doc: str = "", role: str = IDENTITY,
            neutral=_UNSET, choices=None, min=None, max=None, positive: bool = False,
            identity_when=None, neutral_entries=None):
    """A dataclass field with its schema metadata (see the module docstring); ``factory`` makes
    a mutable or nested default, as ``dataclasses.field(default_factory=...)`` does."""
    metadata = {"doc": doc, "role": role}
    for key, value in (("choices", choices), ("min", min), ("max", max),
                       ("identity_when", identity_when), ("neutral_entries", neutral_entries)):
        if value is not None:
            metadata[key] = value
    if positive:
        metadata["positive"] = True
    if neutral is not _UNSET:
        metadata["neutral"] = neutral
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def config_fields(cls) -> list[dataclasses.Field]:
    """The keys a config node of ``cls`` holds (a table entry's own key is not one of them)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("from_key")]


@cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _or_list(values) -> str:
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def unknown_key(path: str, known: list[str]) -> GainbenchError:
    """The one-line refusal of ``path``, naming the nearest known key and every accepted one."""
    where, _, key = path.rpartition(".")
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    prefix = f"{where}." if where else ""
    hint = f"did you mean {prefix}{near[0]}?" if near else "remove it"
    return GainbenchError(f"unknown config key '{path}'; {hint} ({where or 'the top level'} "
                          f"accepts: {', '.join(known)})")


# --- reading a plain dict (the resolved Hydra config) into typed settings ---------------------

def parse(cls, data, path: str, stored: bool = False, **extra):
    """``cls`` built from the plain mapping ``data`` found at config ``path``: unknown keys,
    missing required keys and values of the wrong type are one-line GainbenchErrors; then the
    declared ranges and choices are checked (:func:`check_fields`). ``extra`` sets fields that do
    not come from the mapping (a table entry's key).

    A key ``data`` lacks takes the field's default, or, with ``stored=True`` (a config a run
    recorded), its declared ``neutral`` value where it has one: a recorded config without the key
    was made before the key existed, so it ran as the neutral value says."""
    if not isinstance(data, Mapping):
        raise GainbenchError(f"{path or 'the config'} must be a mapping of keys to values, got "
                             f"{data!r}; fix {path or 'the config'}")
    known = [f.name for f in config_fields(cls)]
    for key in data:
        if key not in known:
            raise unknown_key(f"{path}.{key}" if path else str(key), known)
    values = dict(extra)
    for f in config_fields(cls):
        where = f"{path}.{f.name}" if path else f.name
        if f.name in data:
            values[f.name] = convert(data[f.name], _hints(cls)[f.name], where, stored)
        elif stored and "neutral" in f.metadata:
            values[f.name] = f.metadata["neutral"]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise GainbenchError(f"config value {where} must be set, e.g. "
                                 f"`python -m gainbench ... {where}=<value>`")
    obj = cls(**values)
    check_fields(obj, path)
    return obj


def convert(value, hint, path: str, stored: bool = False):
    """``value`` as type ``hint``: a number stays as written (an int given for a float field is
    kept, so its run id is the one it always had), lists become tuples, nested settings are
    parsed; anything else of the wrong type is refused."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(value, arg, path, stored)
            except GainbenchError as err:
                errors.append(str(err))
        raise GainbenchError(errors[0] if len(errors) == 1 else
                             f"{path} must be {_or_list(_describe(a) for a in args)}, got "
                             f"{value!r}; fix {path}")
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, path, stored)
    if hint is bool:
        if not isinstance(value, bool):
            raise GainbenchError(f"{path} must be true or false, got {value!r}; set {path}=true "
                                 f"or {path}=false")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise GainbenchError(f"{path} must be a whole number, got {value!r}; set {path} to "
                                 "one, e.g. 1024")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise GainbenchError(f"{path} must be a finite number, got {value!r}; set {path} to "
                                 "one, e.g. 0.001 or 1e-3")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise GainbenchError(f"{path} must be a string, got {value!r}; fix {path} (quote "
                                 f"it: {path}='...')")
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise GainbenchError(f"{path} must be a mapping, got {value!r}; fix {path}")
        if origin is dict and dataclasses.is_dataclass(args[1]):  # a table: key -> entry
            return {str(k): parse(args[1], v, f"{path}.{k}", stored, name=str(k))
                    for k, v in value.items()}
        return _plain(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise GainbenchError(f"{path} must be a list, got {value!r}; write it as a list, e.g. "
                                 f"{path}=[...]")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise GainbenchError(f"{path} must be a list of {len(args)} values, got {list(value)}; "
                                 f"fix {path}")
        return tuple(convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    raise TypeError(f"the schema uses a type this reader does not know: {hint} at {path}")


def _describe(hint) -> str:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return "a list"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _plain(value):
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def check_fields(obj, path: str) -> None:
    """The declared ``choices``/``min``/``max``/``positive`` of each field of ``obj`` (a None
    value of an optional field is never checked)."""
    for f in config_fields(type(obj)):
        value, where = getattr(obj, f.name), f"{path}.{f.name}" if path else f.name
        meta = f.metadata
        if value is None or isinstance(value, bool):
            continue
        if "choices" in meta and value not in meta["choices"]:
            near = difflib.get_close_matches(str(value), [str(c) for c in meta["choices"]], n=1)
            hint = f"did you mean {where}={near[0]}?" if near else f"fix {where}"
            raise GainbenchError(f"{where} must be {_or_list(meta['choices'])}, got {value!r}; {hint}")
        if not isinstance(value, (int, float)):
            continue
        if meta.get("positive") and not value > 0:
            raise GainbenchError(f"{where} must be a positive number, got {value!r}; set {where} > 0")
        if "min" in meta and value < meta["min"]:
            raise GainbenchError(f"{where} must be >= {meta['min']}, got {value!r}; set "
                                 f"{where} >= {meta['min']}")
        if "max" in meta and value > meta["max"]:
            raise GainbenchError(f"{where} must be <= {meta['max']}, got {value!r}; set "
                                 f"{where} <= {meta['max']}")


# --- what the run id hashes, and what run.json records ---------------------------------------

def identity(obj):
    """The part of ``obj`` that says what is measured, as plain JSON values: identity fields
    only, each left out while it holds its declared neutral value."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in config_fields(type(obj)):
            meta, value = f.metadata, getattr(obj, f.name)
            if meta.get("role", IDENTITY) != IDENTITY:
                continue
            if "neutral" in meta and value == meta["neutral"]:
                continue
            if "identity_when" in meta:
                other, wanted = meta["identity_when"]
                if getattr(obj, other) != wanted:
                    continue
            if "neutral_entries" in meta:
                value = {k: v for k, v in value.items() if meta["neutral_entries"].get(k, _UNSET) != v}
            out[f.name] = identity(value)
        return out
    if isinstance(obj, Mapping):
        return {str(k): identity(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [identity(v) for v in obj]
    return obj


def dump(obj):
    """Every field of ``obj`` as plain JSON values, in the layout of the YAML (what run.json
    records, and what :func:`parse` reads back)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: dump(getattr(obj, f.name)) for f in config_fields(type(obj))}
    if isinstance(obj, Mapping):
        return {str(k): dump(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [dump(v) for v in obj]
    return obj


# --- credentials ------------------------------------------------------------------------------

# A key named like a credential anywhere in the config, holding a value (a mapping is a group,
# e.g. analysis.per_token, whose own keys are checked): the value would be written to run.json
# and wandb. By pattern, not by list: token (but not tokens/tokenizer/token ids), secret, passw...,
# api_key/apikey, credential, private_key, and a key that is just "key" or ends in "_key".
SECRET_KEY = re.compile(
    r"secret|passw|api_?key|credential|private_?key|(^|[^a-z])key$"
    r"|token(?!s|iz|_?ids?($|[^a-z])|_?type)",
    re.IGNORECASE)


def refuse_secrets(config, where: str = "") -> None:
    """Refuse a config holding a key named like a credential, at any depth."""
    items = config.items() if isinstance(config, Mapping) else (
        enumerate(config) if isinstance(config, (list, tuple)) else ())
    for key, value in items:
        path = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and SECRET_KEY.search(key) and not isinstance(value, Mapping):
            raise GainbenchError(f"config key '{path}' looks like a credential, and the resolved "
                                 "config is written to run.json and wandb; remove it and set the "
                                 "credential in the environment instead (HF_TOKEN, WANDB_API_KEY)")
        refuse_secrets(value, path)


# --- override paths (`python -m gainbench train.lrr=1e-3`) -----------------------------------

def check_path(root, parts: list[str], prefix: str = "") -> None:
    """Refuse a dotted override path that names no setting of ``root`` (free-form dicts, such
    as method options, accept any key below them; a table, any entry name)."""
    cls, done = root, prefix.split(".") if prefix else []
    for i, part in enumerate(parts):
        known = [f.name for f in config_fields(cls)]
        if part not in known:
            raise unknown_key(".".join(done + [part]), known)
        done.append(part)
        hint = _hints(cls)[part]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            hint = next((a for a in args if a is not type(None)), hint)
            origin, args = typing.get_origin(hint), typing.get_args(hint)
        if dataclasses.is_dataclass(hint):
            cls = hint
            continue
        rest = parts[i + 1:]
        if origin is dict and dataclasses.is_dataclass(args[1]) and len(rest) >= 2:
            check_path(args[1], rest[1:], ".".join(done + rest[:1]))  # <table>.<entry>.<key>
        return

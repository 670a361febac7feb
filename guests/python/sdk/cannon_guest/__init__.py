"""cannon_guest: a small helper layer over the componentize-py bindings of cannon:platform.

Authors work with dicts and strings instead of lists of tuples:

    from cannon_guest import task, log, config

    @task
    def run(msg, results):
        log.info(f"got {msg['text']!r}")
        return {"len": len(msg.get("text", ""))}

`@task` (and `Shell.command`) also define `WitWorld` in the author's module, which is
the class componentize-py looks for when it wraps the module into a component.

The bindings module `wit_world` only exists while componentize-py builds (or runs) the
component, so everything that touches it is imported lazily: this file imports fine
under plain CPython, e.g. for unit tests with a fake `wit_world`.
"""
from __future__ import annotations

import sys
import time
import traceback
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

__all__ = [
    "Message", "Fail", "HostError", "KvError", "StreamsError", "Page", "task", "Shell",
    "log", "config", "kv", "taskback", "streams", "to_fields",
]

Fields = List[Tuple[str, str]]

# The bindings exist only inside componentize-py (at build-time pre-initialisation and at
# run time); importing them here puts them in the pre-initialised snapshot. `kv`,
# `taskback` and `streams` exist only when the guest's world imports them (a
# `# cannon-allow: kv` line in app.py, see guests/build-python.sh), so each module is
# imported on its own.
def _bindings(name: str):
    try:
        return __import__(f"wit_world.imports.{name}", fromlist=[name])
    except ImportError:  # plain CPython (unit tests), or an interface the world lacks
        return None


try:
    from componentize_py_types import Err as _Err
except ImportError:
    _Err = Exception  # type: ignore[assignment,misc]
_wcfg = _bindings("config")
_wlog = _bindings("log")
_wkv = _bindings("kv")
_wtb = _bindings("taskback")
_wstreams = _bindings("streams")
_wtypes = _bindings("types")
_Command = getattr(_wtypes, "Command", None)


def _require(module: Any, name: str, grant: str = "") -> Any:
    if module is None:
        raise Fail(
            f"`{name}` is not available to this component: add `# cannon-allow: {name}` to its "
            f"app.py (then rebuild) and `allow: [{grant or name}]` to its entry in cannon-compose.yml"
        )
    return module


class Fail(Exception):
    """Raise to fail the call with exactly this text (the host retries, then dead-letters)."""


class HostError(Exception):
    """An import answered `err`: `.kind` is the WIT variant's name (e.g. "quota-exceeded"),
    `.detail` its text."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class KvError(HostError):
    """A `kv` call failed; `.kind` is the WIT variant (e.g. "quota-exceeded")."""


class StreamsError(HostError):
    """A `streams` call failed; `.kind` is the WIT variant: "not-granted",
    "unknown-service", "invalid-id", "too-large" or "unavailable"."""


class Message:
    """One stream entry: `.id`, `.service` and `.fields` (a dict; the last duplicate wins)."""

    __slots__ = ("id", "service", "fields")

    def __init__(self, id: str, service: str, fields: Mapping[str, str]):
        self.id = id
        self.service = service
        self.fields: Dict[str, str] = dict(fields)

    @classmethod
    def _from_wit(cls, m: Any) -> "Message":
        return cls(m.id, m.service, dict(m.fields))

    def __getitem__(self, key: str) -> str:
        return self.fields[key]

    def __contains__(self, key: object) -> bool:
        return key in self.fields

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        return self.fields.get(key, default)

    def __repr__(self) -> str:
        return f"Message(id={self.id!r}, service={self.service!r}, fields={self.fields!r})"


def to_fields(d: Optional[Mapping[str, Any]]) -> Fields:
    """dict -> WIT `fields`; values are converted with str() (None is dropped)."""
    if d is None:
        return []
    if not isinstance(d, Mapping):
        raise TypeError(f"expected a dict of results, got {type(d).__name__}")
    return [(str(k), str(v)) for k, v in d.items() if v is not None]


def _err(text: str):
    return _Err(text)


def _describe(e: BaseException) -> str:
    if isinstance(e, Fail):
        return str(e)
    log.error("".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip())
    return f"{type(e).__name__}: {e}"


def _install(module_name: str, world_cls: type) -> None:
    mod = sys.modules.get(module_name)
    if mod is not None:
        setattr(mod, "WitWorld", world_cls)


# ----------------------------------------------------------------------------- task world

def task(fn: Callable[[Message, Dict[str, str]], Optional[Mapping[str, Any]]]):
    """Make `fn(msg, results) -> dict` the component's `run` export.

    `msg` is a `Message`, `results` a dict of the results so far. Return a dict (values
    are str()-ed; return None or {} for no results). Raise `Fail("why")` to fail the
    message with that text; any other exception fails it with "Type: text" and logs
    the traceback at error level.
    """

    class WitWorld:
        def run(self, msg, results):
            try:
                out = fn(Message._from_wit(msg), dict(results))
                return to_fields(out)
            except Exception as e:  # noqa: BLE001 - every failure becomes err(text)
                raise _err(_describe(e))

    _install(fn.__module__, WitWorld)
    fn.WitWorld = WitWorld  # type: ignore[attr-defined]
    return fn


# ---------------------------------------------------------------------------- shell world

class Shell:
    """A command tree for the `shell` world.

        shell = Shell()

        @shell.command("echo", summary="Repeat the text", usage="echo TEXT...")
        def echo(args, msg):
            return " ".join(args)

    A handler gets `args` (argv without the command name) and the `Message`, and returns
    the reply text. `NAME --help` answers the usage; an unknown name fails the call.
    """

    def __init__(self) -> None:
        self._cmds: Dict[str, Tuple[str, str, Callable[[List[str], Message], Any]]] = {}
        shell = self

        class WitWorld:
            def commands(self):
                return [_Command(name=n, summary=s, usage=u) for n, (s, u, _) in shell._cmds.items()]

            def call(self, argv, msg):
                try:
                    return shell.dispatch(list(argv), Message._from_wit(msg))
                except Exception as e:  # noqa: BLE001
                    raise _err(_describe(e))

        self.WitWorld = WitWorld

    def command(self, name: str, summary: str = "", usage: str = ""):
        def register(fn):
            doc = (fn.__doc__ or "").strip()
            self._cmds[name] = (summary or (doc.splitlines()[0] if doc else name), usage or name, fn)
            _install(fn.__module__, self.WitWorld)
            return fn
        return register

    def dispatch(self, argv: List[str], msg: Message) -> str:
        """What `call` does; usable directly in unit tests."""
        if not argv:
            raise Fail("empty command")
        entry = self._cmds.get(argv[0])
        if entry is None:
            raise Fail(f"unknown command: {argv[0]}")
        _, usage, fn = entry
        args = argv[1:]
        if args in (["--help"], ["-h"]):
            return usage
        out = fn(args, msg)
        return "" if out is None else str(out)


# ------------------------------------------------------------------------------- imports

class _Log:
    """`log.info("...")` etc.: lines go to the host's log, tagged with service and message."""

    def _emit(self, level_name: str, parts: Iterable[Any]) -> None:
        _wlog.log(getattr(_wlog.Level, level_name), " ".join(str(p) for p in parts))

    def trace(self, *parts: Any) -> None: self._emit("TRACE", parts)
    def debug(self, *parts: Any) -> None: self._emit("DEBUG", parts)
    def info(self, *parts: Any) -> None: self._emit("INFO", parts)
    def warn(self, *parts: Any) -> None: self._emit("WARN", parts)
    warning = warn
    def error(self, *parts: Any) -> None: self._emit("ERROR", parts)


class _Config:
    """`config.get(key, default)`, `config.all()`: the compose file's conf/params."""

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        v = _wcfg.get(key)
        return default if v is None else v

    def get_int(self, key: str, default: int) -> int:
        v = self.get(key)
        try:
            return default if v is None else int(v)
        except ValueError:
            raise Fail(f"config {key!r} must be an integer, got {v!r}") from None

    def all(self) -> Dict[str, str]:
        return dict(_wcfg.get_all())


def _call(error: type, fn, *args):
    """Calls an import returning `result<_, variant>`; an `err` raises `error(kind, detail)`,
    `kind` being the variant's WIT name (`Error_QuotaExceeded` -> "quota-exceeded")."""
    try:
        return fn(*args)
    except _Err as e:
        v = e.value
        kind = type(v).__name__.removeprefix("Error_")
        kind = "".join("-" + c.lower() if c.isupper() else c for c in kind).lstrip("-")
        raise error(kind, getattr(v, "value", str(v))) from None


def _kv_call(fn, *args):
    return _call(KvError, fn, *args)


class _Kv:
    """Service-scoped key-value store (needs `allow: [kv]` in the compose file).
    Failures raise `KvError` (`.kind` = the WIT variant name)."""

    def get(self, key: str) -> Optional[bytes]:
        return _kv_call(_require(_wkv, "kv").get, key)

    def get_str(self, key: str, default: Optional[str] = None) -> Optional[str]:
        v = self.get(key)
        return default if v is None else v.decode("utf-8", "replace")

    def set(self, key: str, value: Any, ttl_ms: Optional[int] = None) -> None:
        if not isinstance(value, (bytes, bytearray)):
            value = str(value).encode("utf-8")
        _kv_call(_require(_wkv, "kv").set, key, bytes(value), ttl_ms)

    def delete(self, key: str) -> bool:
        return _kv_call(_require(_wkv, "kv").delete, key)

    def increment(self, key: str, delta: int = 1) -> int:
        return _kv_call(_require(_wkv, "kv").increment, key, delta)

    def list_keys(self, prefix: str = "", limit: int = 100) -> List[str]:
        return _kv_call(_require(_wkv, "kv").list_keys, prefix, limit)

    def compare_and_swap(self, key: str, expected: Any, new: Any, ttl_ms: Optional[int] = None) -> bool:
        """Atomically: when `key` holds `expected` (None: absent), stores `new` (None:
        deletes it) and returns True; otherwise changes nothing and returns False."""

        def raw(v: Any) -> Optional[bytes]:
            if v is None or isinstance(v, (bytes, bytearray)):
                return None if v is None else bytes(v)
            return str(v).encode("utf-8")

        return _kv_call(_require(_wkv, "kv").compare_and_swap, key, raw(expected), raw(new), ttl_ms)

    def get_many(self, keys: List[str]) -> List[Optional[bytes]]:
        """The values of `keys` in order (None when missing); at most 256 keys."""
        return _kv_call(_require(_wkv, "kv").get_many, list(keys))


class _Taskback:
    """`taskback.send({...})`: one extra taskback, delivered if the pipeline succeeds
    (needs `allow: [taskback]`). Raises `Fail` when the host refuses it."""

    def send(self, fields: Mapping[str, Any]) -> None:
        try:
            _require(_wtb, "taskback").send(to_fields(fields))
        except _Err as e:
            raise Fail(f"taskback refused: {e.value}") from None


class Page:
    """One answer of `streams`: `.entries` (a list of `Message`, oldest first, `.service`
    the service read) and `.truncated` (more entries matched than the answer holds)."""

    __slots__ = ("entries", "truncated")

    def __init__(self, entries: List[Message], truncated: bool):
        self.entries = entries
        self.truncated = truncated

    def __repr__(self) -> str:
        return f"Page(entries={self.entries!r}, truncated={self.truncated!r})"


class _Streams:
    """Read-only access to services' `data` and `taskback` streams (needs
    `# cannon-allow: streams` in app.py and `allow: [{streams: [SERVICE...]}]` in the
    compose file, naming each service read). `kind` is "taskback" (what the service sent
    back: each message's fields plus its results) or "data" (what its collectors added).
    Each call answers at most 1,000 entries and 1 MiB; failures raise `StreamsError`."""

    MAX_COUNT = 1000

    def _page(self, name: str, service: str, kind: str, *args: Any) -> Page:
        module = _require(_wstreams, "streams", "{streams: [SERVICE...]}")
        if kind not in ("data", "taskback"):
            raise ValueError(f'kind must be "data" or "taskback", not {kind!r}')
        wit_kind = getattr(module.StreamKind, kind.upper())
        page = _call(StreamsError, getattr(module, name), service, wit_kind, *args)
        return Page([Message._from_wit(m) for m in page.entries], page.truncated)

    def last(self, service: str, kind: str = "taskback", count: int = 100) -> Page:
        """The newest `count` entries, oldest first."""
        return self._page("last", service, kind, count)

    def after(self, service: str, kind: str, id: str, count: int = MAX_COUNT) -> Page:
        """Up to `count` entries after id `id` ("0": from the start), oldest first."""
        return self._page("after", service, kind, id, count)

    def between(self, service: str, kind: str, from_ms: int, to_ms: int, count: int = MAX_COUNT) -> Page:
        """Up to `count` entries added from `from_ms` to `to_ms` (Unix milliseconds, both
        included), oldest first."""
        return self._page("between", service, kind, from_ms, to_ms, count)

    def since(self, service: str, kind: str, from_ms: int, limit: int = 10_000) -> Tuple[List[Message], bool]:
        """Every entry added since `from_ms`, oldest first, page after page, but at most
        `limit`; the bool says whether more were left unread."""
        def size(left: int) -> int:
            return max(1, min(left, self.MAX_COUNT))

        out: List[Message] = []
        page = self.between(service, kind, from_ms, 2**64 - 1, size(limit))
        while True:
            out.extend(page.entries)
            left = limit - len(out)
            if not (page.truncated and left > 0 and page.entries):
                return out[:limit], page.truncated or len(out) > limit
            page = self.after(service, kind, out[-1].id, size(left))

    @staticmethod
    def id_ms(id: str) -> Optional[int]:
        """The time an entry was added: the milliseconds part of its id (`MS-SEQ`)."""
        head = id.split("-", 1)[0]
        return int(head) if head.isdigit() else None

    @staticmethod
    def now_ms() -> int:
        """Milliseconds since the Unix epoch now (the host's wall clock)."""
        return time.time_ns() // 1_000_000


log = _Log()
config = _Config()
kv = _Kv()
taskback = _Taskback()
streams = _Streams()

"""Table-driven bad-input harness for every public entry point that takes arrays.

An entry point is described once, by an `EntryPoint` row: the callable, a factory of
valid arguments, which arrays it updates in place, which must share one shape, and which
hyperparameter values are invalid. `bad_inputs(row)` then derives the standard bad
variants of every array argument (wrong or mixed dtypes, integer, byte order,
non-contiguous, negative stride, Fortran order, misaligned, read-only, wrong shape or
rank, empty, not an array, aliasing and partially overlapping buffers, NaN/inf where a
rejecting policy applies; each again as the second element of a list when the entry point
takes lists), and `check_rejected(case)` asserts that the call raises TypeError/ValueError
naming the argument, with the expected message, and that every byte of every buffer
involved is unchanged.

Adding an entry point (an optimizer class, a loss, a layer, a metric, the torch adapter)
is one `EntryPoint(...)` row in tests/test_reliability_inputs.py.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

MISSING = object()  # in `bad_kwargs`: leave this keyword out of the call


@dataclass(frozen=True)
class EntryPoint:
    """One array-taking entry point: called as ``func(**arrays, **kwargs)``.

    make(dtype) returns fresh valid arrays ``{argument name: ndarray}`` (2-D, at least
    2 x 2, so that layout variants keep the shape); kwargs are valid other arguments.
    """

    name: str
    func: Callable[..., Any]
    make: Callable[[type], dict[str, np.ndarray]]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    # Arrays updated in place: a read-only one must be rejected, and aliasing is checked.
    inplace: frozenset[str] = frozenset()
    # Arrays that must all have the first one's shape (None: every array argument).
    same_shape: Sequence[str] | None = None
    # Whether each argument also takes a list of arrays (then every case runs again on
    # the second element of the lists, the first one valid and left untouched).
    lists: bool = False
    # Arrays in which a NaN or inf must be rejected (a raising non-finite policy).
    nonfinite: frozenset[str] = frozenset()
    # Dtypes make() accepts; a second one gives the mixed-dtype cases.
    dtypes: Sequence[type] = (np.float32, np.float64)
    # (changed keywords, expected exception, message fragment) for invalid hyperparameters
    # and argument types; MISSING removes a keyword.
    bad_kwargs: Sequence[tuple[Mapping[str, Any], type[Exception], str]] = ()
    # Check the gate's message fragments ("C-contiguous", "read-only", ...) too; entry
    # points that do not go through the native gate may turn this off.
    gate_messages: bool = True
    # Standard variant kinds that do not apply to an argument, e.g. a read-only target
    # that the entry point documents it converts ({"target": frozenset({"int32", ...})}).
    skip: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Argument-specific variants: (argument, kind, transform of the valid array,
    # exception, message fragment), e.g. a class index out of range. They run in the
    # list form too when the entry point takes lists.
    extra: Sequence[tuple[str, str, Callable[[np.ndarray], Any], type[Exception], str]] = ()

    def array_names(self) -> list[str]:
        return list(self.make(self.dtypes[0]))

    def shaped(self) -> list[str]:
        return list(self.array_names() if self.same_shape is None else self.same_shape)


@dataclass(frozen=True)
class BadInput:
    """One bad call: the variant `kind` of argument `arg` (or of its list form)."""

    entry: EntryPoint
    arg: str
    kind: str
    build: Callable[[dict[str, Any]], dict[str, Any]]  # valid arrays -> bad arrays
    exc: type[Exception] | tuple[type[Exception], ...]
    fragment: str  # expected in the message (with the argument's name)
    as_list: bool = False
    dtype: type = np.float32
    kwargs: Mapping[str, Any] | None = None  # replaces entry.kwargs when set

    @property
    def id(self) -> str:
        form = "-list" if self.as_list else ""
        if self.kwargs is not None:
            return f"{self.entry.name}-{self.kind}"
        return f"{self.entry.name}-{self.arg}-{self.kind}{form}"


# --- building blocks ---------------------------------------------------------------


def _strided(a):
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    v = big[..., ::2]
    v[...] = a
    return v


def _negative_stride(a):
    return a[::-1].copy()[::-1]


def _misaligned(a):
    raw = np.zeros(a.nbytes + 1, np.uint8)
    v = np.ndarray(a.shape, a.dtype, buffer=raw.data, offset=1)
    v[...] = a
    return v


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _with(a, value):
    a = a.copy()
    a.flat[a.size // 2] = value
    return a


def _overlapping(a, b, shift=3):
    """Two arrays with a's and b's values, contiguous and aligned, sharing all but
    `shift` elements of one buffer."""
    base = np.zeros(a.size + shift, a.dtype)
    x = base[:a.size].reshape(a.shape)
    y = base[shift:shift + b.size].reshape(b.shape)
    x[...] = a
    y[...] = b  # overwrites part of x: values do not matter, layout does
    return x, y


# kind -> (transform of one valid array, exception, gate message fragment)
DTYPE_VARIANTS: dict[str, tuple[Callable[[np.ndarray], Any], type[Exception], str]] = {
    "float16": (lambda a: a.astype(np.float16), TypeError, "float32 or float64"),
    "int32": (lambda a: a.astype(np.int32), TypeError, "float32 or float64"),
    "int64": (lambda a: a.astype(np.int64), TypeError, "float32 or float64"),
    "bool": (lambda a: a > 0, TypeError, "float32 or float64"),
    "complex64": (lambda a: a.astype(np.complex64), TypeError, "float32 or float64"),
    "object": (lambda a: a.astype(object), TypeError, "float32 or float64"),
    "big-endian": (lambda a: a.astype(a.dtype.newbyteorder(">")), TypeError,
                   "native byte order"),
}
LAYOUT_VARIANTS: dict[str, tuple[Callable[[np.ndarray], Any], type[Exception], str]] = {
    "strided": (_strided, ValueError, "C-contiguous"),
    "negative-stride": (_negative_stride, ValueError, "C-contiguous"),
    "fortran-order": (np.asfortranarray, ValueError, "C-contiguous"),
    "misaligned": (_misaligned, ValueError, "aligned"),
}
NOT_ARRAY_VARIANTS: dict[str, tuple[Callable[[np.ndarray], Any], type[Exception], str]] = {
    "nested-list": (lambda a: a.tolist(), TypeError, "numpy.ndarray"),
    "scalar": (lambda a: 1.0, TypeError, "numpy.ndarray"),
    "none": (lambda a: None, (TypeError, ValueError), ""),
}
SHAPE_VARIANTS: dict[str, tuple[Callable[[np.ndarray], Any], type[Exception], str]] = {
    "one-short": (lambda a: a[..., :-1].copy(), ValueError, "shape"),
    "flattened": (lambda a: a.reshape(-1).copy(), ValueError, "shape"),
    "0-d": (lambda a: np.asarray(a.flat[0]), ValueError, "shape"),
    "empty": (lambda a: np.zeros((0,), a.dtype), ValueError, "shape"),
}
NONFINITE_VALUES = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}


def _replace(arg, transform, as_list):
    """A builder that replaces `arg` (or the second element of its list) by transform(a)."""

    def build(args):
        out = dict(args)
        if as_list:
            lst = list(out[arg])
            lst[1] = transform(lst[1])
            out[arg] = lst
        else:
            out[arg] = transform(out[arg])
        return out

    return build


def _pair(x, y, how, as_list):
    """Builder for two arguments sharing memory: 'alias' (the same array) or 'overlap'."""

    def build(args):
        out = dict(args)
        get = (lambda k: out[k][1]) if as_list else (lambda k: out[k])
        if how == "alias":
            new_x, new_y = get(y), get(y)
        else:
            new_x, new_y = _overlapping(get(x), get(y))
        for k, v in ((x, new_x), (y, new_y)):
            if as_list:
                out[k] = [out[k][0], v]
            else:
                out[k] = v
        return out

    return build


def _repeated(arg, args):
    """The second array of `arg`'s list twice; the other lists keep matching shapes."""
    return {k: [v[1], v[1]] if k == arg else [v[1].copy(), v[1]] for k, v in args.items()}


def bad_inputs(entry: EntryPoint) -> list[BadInput]:
    """Every standard bad variant of every array argument of `entry`, plus its bad kwargs."""
    names = entry.array_names()
    shaped = entry.shaped()
    cases: list[BadInput] = []
    forms = (False, True) if entry.lists else (False,)
    for as_list in forms:
        def add(arg, kind, build, exc, fragment, as_list=as_list, **kw):
            if kind in entry.skip.get(arg, ()):
                return
            cases.append(BadInput(entry, arg, kind, build, exc,
                                  fragment if entry.gate_messages else "", as_list, **kw))

        for arg in names:
            variants = {**DTYPE_VARIANTS, **LAYOUT_VARIANTS, **NOT_ARRAY_VARIANTS}
            if as_list:  # inside a list: an item that is not an array at all
                variants = {k: v for k, v in variants.items() if k != "none"}
            for kind, (t, exc, frag) in variants.items():
                add(arg, kind, _replace(arg, t, as_list), exc, frag)
            if arg in entry.inplace:
                add(arg, "read-only", _replace(arg, _readonly, as_list), ValueError, "read-only")
            # Mixed float dtypes need another array in the call to disagree with.
            if len(names) > 1 or as_list:
                for base, other in itertools.permutations(entry.dtypes[:2]):
                    add(arg, f"{np.dtype(other).name}-in-{np.dtype(base).name}-call",
                        _replace(arg, lambda a, o=other: a.astype(o), as_list),
                        TypeError, "same dtype", dtype=base)
            if arg in shaped and len(shaped) > 1:
                for kind, (t, exc, frag) in SHAPE_VARIANTS.items():
                    add(arg, kind, _replace(arg, t, as_list), exc, frag)
            if entry.lists and not as_list and arg in shaped[1:]:
                add(arg, "list-not-array", _replace(arg, lambda a: [a], False), TypeError,
                    "like")
            for kind, value in NONFINITE_VALUES.items():
                if arg in entry.nonfinite:
                    add(arg, kind, _replace(arg, lambda a, v=value: _with(a, v), as_list),
                        ValueError, "")
        for arg, kind, t, exc, frag in entry.extra:
            cases.append(BadInput(entry, arg, kind, _replace(arg, t, as_list), exc, frag,
                                  as_list))
        # Two arguments sharing memory, where at least one is written (among the arrays
        # of one shape and dtype).
        for x, y in itertools.combinations(shaped, 2):
            if x in entry.inplace or y in entry.inplace:
                for how in ("alias", "overlap"):
                    add(x, f"{how}-{y}", _pair(x, y, how, as_list), ValueError, "share memory")
        if as_list:
            for arg in names:
                if arg in entry.inplace:  # the same array twice in one list
                    add(arg, "repeated-in-list", functools.partial(_repeated, arg),
                        ValueError, "share memory")
            for arg in shaped[1:]:
                add(arg, "list-length", lambda a, k=arg: {**a, k: a[k][:1]},
                    ValueError, "arrays but")
                add(arg, "array-not-list", lambda a, k=arg: {**a, k: a[k][1]},
                    TypeError, "like")
    for kw, exc, frag in entry.bad_kwargs:  # the fragment names the argument
        label = ",".join(f"{k}={'missing' if v is MISSING else v!r}" for k, v in kw.items())
        cases.append(BadInput(entry, frag, label, lambda a: a, exc, frag,
                              kwargs={**entry.kwargs, **kw}))
    return cases


def _valid_args(case: BadInput) -> dict[str, Any]:
    args = case.entry.make(case.dtype)
    if case.as_list:  # a valid first element of another size, then the one under test
        first = case.entry.make(case.dtype)
        args = {k: [np.concatenate([first[k], first[k]]), v] for k, v in args.items()}
    return args


def _buffers(obj, out):
    """Collects (array, bytes) for every ndarray reachable from obj, bases included."""
    if isinstance(obj, np.ndarray):
        out.append((obj, obj.tobytes()))
        base = obj.base
        while base is not None:
            if isinstance(base, np.ndarray):
                out.append((base, base.tobytes()))
                base = base.base
            else:  # a raw buffer (bytes, bytearray, memoryview)
                out.append((base, bytes(memoryview(base))))
                break
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _buffers(x, out)
    elif isinstance(obj, dict):
        for x in obj.values():
            _buffers(x, out)


def _current(buf):
    return buf.tobytes() if isinstance(buf, np.ndarray) else bytes(memoryview(buf))


def check_rejected(case: BadInput) -> None:
    """The bad call raises the expected error naming the argument; nothing changes."""
    valid = _valid_args(case)
    bad = case.build(valid)
    snap: list[tuple[Any, bytes]] = []
    _buffers(valid, snap)
    _buffers(bad, snap)
    kwargs = dict(case.entry.kwargs if case.kwargs is None else case.kwargs)
    kwargs = {k: v for k, v in kwargs.items() if v is not MISSING}
    with pytest.raises(case.exc) as info:
        case.entry.func(**bad, **kwargs)
    message = str(info.value)
    assert case.arg in message, f"{case.id}: the error does not name {case.arg!r}: {message}"
    assert case.fragment in message, f"{case.id}: expected {case.fragment!r} in: {message}"
    for buf, before in snap:
        assert _current(buf) == before, f"{case.id}: a buffer changed"


def check_accepts_readonly_inputs(entry: EntryPoint, dtype=np.float32) -> None:
    """Arrays that are only read may be read-only: the result equals a writeable call."""
    args = entry.make(dtype)
    frozen = {k: (_readonly(v) if k not in entry.inplace else v.copy()) for k, v in args.items()}
    want = entry.func(**args, **entry.kwargs)
    got = entry.func(**frozen, **entry.kwargs)
    _assert_same(got, want)
    for k in entry.inplace:
        assert frozen[k].tobytes() == args[k].tobytes()


def _assert_same(got, want):
    if isinstance(want, (tuple, list)):
        assert isinstance(got, type(want)) and len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            _assert_same(a, b)
    elif want is None:
        assert got is None
    else:
        assert np.array_equal(np.asarray(got), np.asarray(want), equal_nan=True)


def count(entries: Sequence[EntryPoint]) -> dict[str, int]:
    """Bad inputs per entry point (the README's "N inputs x M entry points" figure)."""
    return {e.name: len(bad_inputs(e)) for e in entries}

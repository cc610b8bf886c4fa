"""Deterministic, unchecked hash-based .pyc files (PEP 552).

`marshal.dumps()` marks an object as a back-reference target (FLAG_REF)
whenever its reference count is above one at the moment of the dump, so its
output depends on whatever else the packing process happens to hold (an
interned name also used by some imported module, a constant kept alive by a
cache, ...). `canonical_marshal()` rewrites such a stream so that only the
objects that are referenced again keep the flag, with back-references
renumbered.

Process state leaks in one more way: when a code object is created, the
strings in its frozenset constants are interned, and a frozenset is copied
when one of its strings was already interned elsewhere. Whether two functions
of one module share an `x in {"a", "b"}` constant thus depends on which
strings the process interned before. `share_equal_frozensets()` makes them
all shared, as they are when a module is compiled in a fresh interpreter.
(Python 3.11 already writes frozenset members in sorted order.)
"""

import importlib.util
import marshal
import struct
import types
import warnings

_FLAG_REF = 0x80
_PYC_FLAGS_UNCHECKED_HASH = 0b01

# Type codes of the marshal format (version 4, as written by Python 3.11 to
# 3.13; version 5 of 3.14 adds slices, ":"). Code objects have the same
# fields in 3.11 to 3.14.
_PAYLOAD_SIZE = {ord(c): n for c, n in {
    "0": 0, "N": 0, "F": 0, "T": 0, "S": 0, ".": 0,  # NULL, None, ..., Ellipsis
    "i": 4, "g": 8, "y": 16,                         # int32, float, complex
}.items()}
_BYTES_LEN32 = frozenset(b"stuaA")  # bytes / str with an int32 length
_BYTES_LEN8 = frozenset(b"zZ")      # short ASCII str with a byte length
_SEQUENCE_LEN32 = frozenset(b"([<>")  # tuple, list, set, frozenset
_SMALL_TUPLE = ord(")")
_LONG = ord("l")
_DICT = ord("{")
_NULL = ord("0")
_REF = ord("r")
_CODE = ord("c")
_SLICE = ord(":")  # 3.14: start, stop, step
_CODE_INT_FIELDS_BEFORE = 5  # argcount, posonlyargcount, kwonlyargcount, stacksize, flags
_CODE_OBJECTS_BEFORE_LINENO = 8  # code, consts, names, localsplusnames,
                                 # localspluskinds, filename, name, qualname
_CODE_OBJECTS_AFTER_LINENO = 2   # linetable, exceptiontable

_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")


class _RefScanner:
    """Walks one marshalled object, recording flagged objects and references."""

    def __init__(self, data):
        self.data = data
        self.pos = 0
        self.flagged = []     # offsets of flagged type bytes, in ref-index order
        self.references = []  # (offset of the index field, referenced index)

    def int32(self):
        value = _INT32.unpack_from(self.data, self.pos)[0]
        self.pos += 4
        return value

    def objects(self, count):
        for _ in range(count):
            self.object()

    def object(self):
        """Skips the object at self.pos; returns its type code without the flag."""
        code = self.data[self.pos]
        if code & _FLAG_REF:
            self.flagged.append(self.pos)
            code &= ~_FLAG_REF
        self.pos += 1
        if code in _PAYLOAD_SIZE:
            self.pos += _PAYLOAD_SIZE[code]
        elif code in _BYTES_LEN32:
            size = self.int32()
            self.pos += size
        elif code in _BYTES_LEN8:
            self.pos += 1 + self.data[self.pos]
        elif code in _SEQUENCE_LEN32:
            self.objects(self.int32())
        elif code == _SMALL_TUPLE:
            self.pos += 1
            self.objects(self.data[self.pos - 1])
        elif code == _REF:
            self.references.append((self.pos, self.int32()))
        elif code == _LONG:
            digits = abs(self.int32())
            self.pos += 2 * digits
        elif code == _DICT:
            while self.object() != _NULL:
                self.object()
        elif code == _SLICE:
            self.objects(3)
        elif code == _CODE:
            self.pos += 4 * _CODE_INT_FIELDS_BEFORE
            self.objects(_CODE_OBJECTS_BEFORE_LINENO)
            self.pos += 4
            self.objects(_CODE_OBJECTS_AFTER_LINENO)
        else:
            raise RuntimeError(f"unknown marshal type {code:#x} at offset {self.pos - 1}")
        return code


def canonical_marshal(data):
    """Returns `data` (one marshalled object) with only the needed FLAG_REFs."""
    scanner = _RefScanner(data)
    scanner.object()
    if scanner.pos != len(data):
        raise RuntimeError("trailing bytes after the marshalled object")
    used = {index for _, index in scanner.references}
    new_index = {}
    out = bytearray(data)
    for index, offset in enumerate(scanner.flagged):
        if index in used:
            new_index[index] = len(new_index)
        else:
            out[offset] &= ~_FLAG_REF
    for offset, index in scanner.references:
        _UINT32.pack_into(out, offset, new_index[index])
    return bytes(out)


def _constant_key(value):
    """A key telling apart constants that compare equal (1, 1.0, True, -0.0)."""
    return type(value), repr(value)


def share_equal_frozensets(code, shared=None):
    """Returns `code` where equal frozenset constants are one object."""
    if shared is None:
        shared = {}
    consts = []
    for const in code.co_consts:
        if type(const) is frozenset:
            key = frozenset(map(_constant_key, const))
            const = shared.setdefault(key, const)
        elif isinstance(const, types.CodeType):
            const = share_equal_frozensets(const, shared)
        consts.append(const)
    return code.replace(co_consts=tuple(consts))


def compile_unchecked_pyc(source, filename):
    """Compiles `source` (bytes) to the bytes of an unchecked hash-based pyc.

    `filename` becomes co_filename. Raises SyntaxError or ValueError when the
    source does not compile; compiler warnings (invalid escapes, ...) are
    silenced, as they are when pip compiles a wheel.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = compile(source, filename, "exec", dont_inherit=True, optimize=0)
    code = share_equal_frozensets(code)
    header = (importlib.util.MAGIC_NUMBER
              + _UINT32.pack(_PYC_FLAGS_UNCHECKED_HASH)
              + importlib.util.source_hash(source))
    return header + canonical_marshal(marshal.dumps(code))

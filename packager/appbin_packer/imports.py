"""The code start-up runs: the modules the app's import statements reach.

appbin-pack stores start-up code uncompressed (the host unmarshals a stored
.pyc in place and maps a stored extension module from app.bin) and
compresses the rest. Which code is start-up code is found here, statically,
without running anything: from the app's module (and the modules the host's
own runtime imports), every `import` and `from ... import` statement of the
compiled code is followed (at any depth of the module, conditional or not,
so the set is a superset of what one start imports), with relative imports
resolved and `from package import name` counting `package.name` when it is a
module. Imports made by name at run time (`importlib.import_module(x)`,
`__import__`) are not seen: such modules are compressed, which costs them
their decompression when imported, nothing else.
"""

import dis
import importlib.machinery
import marshal

from .collect import SITE_PREFIX

# The module roots of the archive, searched in this order (host/importer.c).
ROOTS = ("stdlib/lib-dynload/", "stdlib/", SITE_PREFIX)
# What the host's runtime (host/runtime/_appbin_runtime.py) imports to serve,
# besides the app: start-up code of every app.bin.
RUNTIME_IMPORTS = ("asyncio", "copy", "encodings", "encodings.aliases", "encodings.ascii",
                   "encodings.latin_1", "encodings.utf_8", "errno", "gc", "http",
                   "importlib.resources.abc", "importlib.resources.readers", "importlib.util",
                   "io", "json", "logging", "os", "pathlib", "posixpath", "resource", "signal",
                   "time", "traceback")
_EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def module_members(names):
    """{dotted module name: (member, is_package)} for the .pyc files and
    extension modules among member `names`, the first root winning."""
    modules = {}
    for root in ROOTS:
        for name in names:
            if not name.startswith(root):
                continue
            rel = name[len(root):]
            if root == "stdlib/" and rel.startswith(("lib-dynload/", "site-packages/")):
                continue
            module = _module_of(rel)
            if module and module[0] not in modules:
                modules[module[0]] = (name, module[1])
    return modules


def _module_of(rel):
    """(dotted name, is package) for a root-relative member path, or None."""
    parts = rel.split("/")
    base = parts[-1]
    if base.endswith(".pyc"):
        stem = base[:-4]
    else:
        stem = next((base[:-len(s)] for s in _EXTENSION_SUFFIXES if base.endswith(s)), None)
    if not stem or "." in stem or any(not p or "." in p or "-" in p for p in parts[:-1]):
        return None
    if stem == "__init__":
        return (".".join(parts[:-1]), True) if len(parts) > 1 else None
    return ".".join(parts[:-1] + [stem]), False


def _imports_of(code):
    """(name, fromlist, level) of every import statement in `code` and the
    code objects nested in it."""
    found, stack = [], [code]
    while stack:
        co = stack.pop()
        recent = []  # the arguments of the last two LOAD_CONSTs
        for ins in dis.get_instructions(co):
            if ins.opname in ("LOAD_CONST", "LOAD_SMALL_INT"):  # 3.14 loads small ints so
                recent = (recent + [ins.argval])[-2:]
                continue
            if ins.opname == "IMPORT_NAME" and len(recent) == 2:
                level, fromlist = recent
                if isinstance(level, int):
                    found.append((ins.argval, fromlist or (), level))
            recent = []
        stack.extend(c for c in co.co_consts if hasattr(c, "co_code"))
    return found


def _resolve(module, is_package, name, level):
    """The absolute name `import name` at `level` means in `module`, or None."""
    if level == 0:
        return name
    package = module if is_package else module.rpartition(".")[0]
    parts = package.split(".") if package else []
    if level - 1 > len(parts) or (level - 1 == len(parts) and not name):
        return None
    base = ".".join(parts[:len(parts) - (level - 1)])
    return f"{base}.{name}" if base and name else base or name


def startup_members(members, roots):
    """The member names of the code that importing `roots` (dotted names)
    reaches: .pyc files and extension modules. `members` maps member names to
    the archive's Member objects (a .pyc's data is its compiled bytes)."""
    modules = module_members(members)
    seen, todo = set(), [r for r in roots if r in modules]

    def reach(name):
        # Importing a.b.c imports a and a.b first.
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in modules and prefix not in seen:
                seen.add(prefix)
                todo.append(prefix)

    for root in list(todo):
        reach(root)
    while todo:
        module = todo.pop()
        member, is_package = modules[module]
        if not member.endswith(".pyc"):
            continue  # an extension module: its imports are not ours to see
        data = members[member].read()
        try:
            code = marshal.loads(data[16:])
        except (ValueError, EOFError, TypeError):
            continue
        for name, fromlist, level in _imports_of(code):
            target = _resolve(module, is_package, name, level)
            if not target:
                continue
            reach(target)
            for item in fromlist if isinstance(fromlist, tuple) else ():
                if isinstance(item, str) and item != "*" and f"{target}.{item}" in modules:
                    reach(f"{target}.{item}")
    return {modules[m][0] for m in seen}

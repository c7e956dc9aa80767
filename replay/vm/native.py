"""The engine as a plain shared library for the guest: the same numba code, without numba.

Under TCG, importing numba and loading the engine from numba's cache took most of a guest's
start-up (about 4 s of CPU on the host, two to four minutes under TCG on a busy machine): numba's
import, its typing and lowering registries, LLVM. The guest needs none of it: the engine's code
is fixed once the host has compiled it. So the host, after its warm-up run of the guest's job
(``guest.py --warm``, with the guest's ``NUMBA_CPU_NAME=generic``), takes every compiled function
of ``replay.engine.engine`` with the argument types that run used, wraps each in a
``numba.cfunc`` taking pointers and shapes, and writes numba's own optimized module as one position-independent object,
linked with ``cc -shared`` into ``engine.so`` (``build``). The guest (``install``) loads it with
ctypes (which releases the GIL, as ``nogil=True`` does) and puts the native functions in place of
the dispatchers in ``replay.engine.engine``.

``replay.engine.engine`` is still imported in the guest for its constants and ``EngineState``; its
module-level numba calls (types, intrinsics, decorators) then meet stand-ins that do nothing
while it is imported and refuse to be used afterwards, so Python code that needs real numba in
the guest fails loudly (and the host's own native warm-up run, which runs the same path, falls
back to numba in the guest, see ``pyroot.py``).

The engine's error paths (numba raising an exception) call numba's runtime helpers; the library
carries stand-ins for them that end the process with one line, as no Python exception can come
back through a C call. The engine raises none in normal use (it indexes without bounds checks and
divides only by non-zero sizes).
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import json
import os
import sys
import types as pytypes
from pathlib import Path

LIBRARY = "engine.so"
MANIFEST = "engine.json"
ENGINE_MODULE = "replay.engine.engine"
EXIT_RAISED = 70                 # the guest's Python exits with this when the engine raised

# ---------------------------------------------------------------------------------------------
# Host side: build


def _describe(numba_type) -> dict:
    """An argument's kind for ctypes: an integer, or a C-contiguous array (its dtype, dims)."""
    from numba.core import types

    if isinstance(numba_type, types.Literal):  # a constant argument at a call compiled first
        numba_type = numba_type.literal_type
    if isinstance(numba_type, types.Array):
        if numba_type.layout != "C":
            raise ValueError(f"array argument with layout {numba_type.layout}")
        return {"array": str(numba_type.dtype), "ndim": numba_type.ndim}
    if isinstance(numba_type, types.Integer):
        return {"int": str(numba_type)}
    raise ValueError(f"argument of type {numba_type}")


def _wrapper_source(name: str, kinds: list[dict]) -> str:
    params, args = [], []
    for index, kind in enumerate(kinds):
        if "array" in kind:
            shape = [f"s{index}_{d}" for d in range(kind["ndim"])]
            params += [f"p{index}", *shape]
            args.append(f"carray(p{index}, ({', '.join(shape)},))")
        else:
            params.append(f"a{index}")
            args.append(f"a{index}")
    return (f"def {name}({', '.join(params)}):\n"
            f"    return target({', '.join(args)})\n")


def _c_signature(kinds, return_type):
    from numba.core import types

    arguments = []
    for kind in kinds:
        if "array" in kind:
            arguments.append(types.CPointer(getattr(types, kind["array"])))
            arguments += [types.int64] * kind["ndim"]
        else:
            arguments.append(getattr(types, kind["int"]))
    return return_type(*arguments)


def _stub_source(names: list[str]) -> str:
    lines = ["#include <unistd.h>",
             'static const char message[] = "mmreplay: the engine raised an exception inside '
             'the guest (numba runtime helper called); stopping\\n";']
    for name in names:
        lines.append(f"void {name}(void) {{ (void)!write(2, message, sizeof message - 1); "
                     f"_exit({EXIT_RAISED}); }}")
    return "\n".join(lines) + "\n"


def build(out_dir: Path) -> dict:
    """Write ``engine.so`` and ``engine.json`` into ``out_dir`` from the compiled functions of
    ``replay.engine.engine`` (run the job first, with the guest's numba settings). Raises on
    anything it cannot carry over (the caller then keeps numba in the guest)."""
    import shutil
    import subprocess
    import tempfile

    import llvmlite.binding as ll
    from numba import carray, cfunc
    from numba.core import types
    from numba.core.registry import CPUDispatcher

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc) to link the guest's engine library")
    engine = sys.modules[ENGINE_MODULE]
    functions, modules, skipped = {}, [], {}
    for name, value in sorted(vars(engine).items()):
        if not isinstance(value, CPUDispatcher) or not value.overloads:
            continue
        entries, seen = [], set()
        for index, (signature, compiled) in enumerate(sorted(value.overloads.items(), key=str)):
            return_type = compiled.signature.return_type
            try:
                kinds = [_describe(t) for t in signature]
                if return_type != types.none and not isinstance(return_type, types.Integer):
                    raise ValueError(f"returns {return_type}")
            except ValueError as exc:
                # Only reached from compiled code (a bool argument, say): calling it from
                # Python in the guest fails loudly, see _not_native.
                skipped[f"{name}{signature}"] = str(exc)
                continue
            if str(kinds) in seen:
                continue
            seen.add(str(kinds))
            symbol = f"mmreplay_{name}_{index}"
            namespace = {"target": value, "carray": carray}
            exec(_wrapper_source(symbol, kinds), namespace)
            c_return = types.void if return_type == types.none else return_type
            wrapper = cfunc(_c_signature(kinds, c_return), nogil=True)(namespace[symbol])
            library = wrapper._library
            library._ensure_finalized()
            module = ll.parse_assembly(str(library._final_module))
            modules.append((module, wrapper.native_name, symbol))
            entries.append({"symbol": symbol, "args": kinds,
                            "returns": None if return_type == types.none else str(return_type)})
        if entries:
            functions[name] = entries
    if not functions:
        raise RuntimeError(f"no compiled function found in {ENGINE_MODULE}")
    target = ll.Target.from_default_triple()
    machine = target.create_target_machine(cpu=os.environ.get("NUMBA_CPU_NAME", "generic"),
                                           features="", reloc="pic", codemodel="default", opt=3)
    with tempfile.TemporaryDirectory(prefix="mmreplay-native-") as scratch:
        objects, undefined, defined = [], set(), set()
        for index, (module, native_name, symbol) in enumerate(modules):
            # Each cfunc's module carries its own copy of the engine (linkonce_odr functions
            # merge at link time); the exported name is ours, the rest stays internal.
            for function in module.functions:
                if function.is_declaration:
                    undefined.add(function.name)
                else:
                    defined.add(function.name)
                    if function.name == native_name:
                        function.name = symbol
                    elif function.linkage == ll.Linkage.external:
                        function.linkage = ll.Linkage.linkonce_odr
            for variable in module.global_variables:
                if not variable.is_declaration and variable.linkage == ll.Linkage.external:
                    variable.linkage = ll.Linkage.linkonce_odr
            path = Path(scratch) / f"part{index}.o"
            path.write_bytes(machine.emit_object(module))
            objects.append(str(path))
        helpers = sorted(n for n in undefined - defined if n.startswith(("numba_", "NRT_")))
        stubs = Path(scratch) / "stubs.c"
        stubs.write_text(_stub_source(helpers))
        temporary = out_dir / (LIBRARY + ".tmp")
        done = subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(temporary),
                               str(stubs), *objects], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"linking the guest's engine library failed: "
                               f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
        os.replace(temporary, out_dir / LIBRARY)
    manifest = {"library": LIBRARY, "functions": functions, "helpers_stubbed": helpers,
                "not_exported": skipped,
                "cpu": os.environ.get("NUMBA_CPU_NAME", "generic")}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


# ---------------------------------------------------------------------------------------------
# Guest side: install


class _Absent:
    """Stands for any numba object while ``replay.engine.engine`` is imported; refuses use after."""

    sealed = False

    def __init__(self, name: str):
        self._name = name

    def _check(self):
        if _Absent.sealed:
            raise RuntimeError(f"{self._name}: numba is not loaded in the guest (native engine)")

    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        self._check()
        return _Absent(f"{self._name}.{attribute}")

    def __call__(self, *args, **kwargs):
        self._check()
        return _Absent(f"{self._name}(...)")


class _AbsentModule(pytypes.ModuleType):
    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return _Absent(f"{self.__name__}.{attribute}")


class _AbsentNumba:
    """Serves ``numba`` and every ``numba.*`` module as an ``_AbsentModule`` (a meta path finder
    and its loader; not derived from importlib.abc, whose import costs seconds under TCG)."""

    def find_spec(self, name, path, target=None):
        if name == "numba" or name.startswith("numba."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _AbsentModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def _not_native(function):
    def refuse(*args, **kwargs):
        raise RuntimeError(f"{function.__module__}.{function.__name__} is not in the guest's "
                           "native engine library")
    refuse.__name__ = function.__name__
    return refuse


def _jit_module() -> pytypes.ModuleType:
    """``traces.jit`` for the guest: ``njit`` marks a function as not available natively."""
    module = pytypes.ModuleType("traces.jit")
    module.CACHING = False

    def njit(*args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return _not_native(args[0])
        return _not_native

    module.njit = njit
    return module


_CTYPES_INT = {"int8": ctypes.c_int8, "int16": ctypes.c_int16, "int32": ctypes.c_int32,
               "int64": ctypes.c_int64, "uint8": ctypes.c_uint8, "uint16": ctypes.c_uint16,
               "uint32": ctypes.c_uint32, "uint64": ctypes.c_uint64}


class NativeFunction:
    """One engine function: calls the library's version whose argument types match."""

    def __init__(self, library, name: str, entries: list[dict]):
        import numpy as np

        self.name = name
        self.variants = []
        for entry in entries:
            function = getattr(library, entry["symbol"])
            argtypes = []
            for kind in entry["args"]:
                if "array" in kind:
                    argtypes += [ctypes.c_void_p] + [ctypes.c_int64] * kind["ndim"]
                else:
                    argtypes.append(_CTYPES_INT[kind["int"]])
            function.argtypes = argtypes
            function.restype = _CTYPES_INT[entry["returns"]] if entry["returns"] else None
            key = tuple((np.dtype(k["array"]), k["ndim"]) if "array" in k else "int"
                        for k in entry["args"])
            self.variants.append((key, function))

    def __call__(self, *args):
        import numpy as np

        key = tuple((a.dtype, a.ndim) if isinstance(a, np.ndarray) else "int" for a in args)
        for variant, function in self.variants:
            if variant == key:
                break
        else:
            raise TypeError(f"{self.name}: no native version for argument types {key}")
        flat = []
        for value in args:
            if isinstance(value, np.ndarray):
                if not value.flags.c_contiguous:
                    raise TypeError(f"{self.name}: a non-contiguous array argument")
                flat.append(value.ctypes.data)
                flat.extend(value.shape)
            else:
                flat.append(int(value))
        return function(*flat)


def install(manifest_path: str) -> dict:
    """In the guest, before anything imports ``replay.engine.engine``: load the library, import the
    engine module around stand-ins for numba, and put the native functions in its place."""
    manifest_path = Path(manifest_path)
    manifest = json.loads(manifest_path.read_text())
    library = ctypes.CDLL(str(manifest_path.parent / manifest["library"]))
    if "replay.engine.engine" in sys.modules or "numba" in sys.modules:
        raise RuntimeError("the native engine must be installed before numba or "
                           "replay.engine.engine is imported")
    sys.meta_path.insert(0, _AbsentNumba())
    sys.modules["traces.jit"] = _jit_module()
    import importlib

    engine = importlib.import_module(ENGINE_MODULE)
    _Absent.sealed = True
    for name, entries in manifest["functions"].items():
        setattr(engine, name, NativeFunction(library, name, entries))
    return manifest

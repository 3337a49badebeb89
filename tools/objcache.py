"""A compiler launcher that reuses object files across isolated rebuilds.

pip builds fastoptim in a fresh isolated environment each time, and scikit-build-core then
clears the CMake files of the previous build (the pybind11 include path has moved), so every
`pip install` would recompile every object. CMake runs each compile as

    python objcache.py <cache-dir> <compiler> <args...> -o <obj> -c <src>

and this script keys the object on what determines it: the compiler's identity, the flags
(without include paths, output and dependency-file names) and the preprocessed source
without line markers (so a header that moved but did not change still hits). On a hit the
object is copied from the cache; the preprocessor run writes the dependency file that
Ninja reads, exactly as the compile would have. Any failure falls back to compiling.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

# Flags whose value is a path that must not enter the key (the preprocessed text covers
# what they select and, for -fmacro-prefix-map, how __FILE__ reads), or an output name.
_PATH_FLAGS = {"-I", "-isystem", "-iquote", "-idirafter", "-o", "-MF", "-MT", "-MQ"}


def _compiler_id(compiler: str) -> bytes:
    out = subprocess.run([compiler, "-v"], capture_output=True, check=False)
    return shutil.which(compiler).encode() + b"\0" + out.stderr + out.stdout


def _split(args: list[str]) -> tuple[list[str], str | None, str | None]:
    """Key flags, the object path and the source path of one compile command."""
    key, obj, src = [], None, None
    i = 0
    while i < len(args):
        a = args[i]
        if a in _PATH_FLAGS and i + 1 < len(args):
            if a == "-o":
                obj = args[i + 1]
            i += 2
            continue
        if a.startswith(("-fmacro-prefix-map=", "-I", "-isystem")) and a not in _PATH_FLAGS:
            i += 1
            continue
        if not a.startswith("-") and a.endswith((".cpp", ".cc", ".cxx")):
            src = a
        else:
            key.append(a)
        i += 1
    return key, obj, src


def main(argv: list[str]) -> int:
    cache_dir, cmd = argv[0], argv[1:]
    compile_cmd = cmd
    key_flags, obj, src = _split(cmd[1:])
    if obj is None or src is None or "-c" not in cmd:
        return subprocess.call(compile_cmd)
    # Same command, preprocessing only: no line markers; -MD/-MF still write the depfile.
    pre = [a if a != "-c" else "-E" for a in cmd]
    fd, ipath = tempfile.mkstemp(suffix=".ii", dir=os.path.dirname(obj) or ".")
    os.close(fd)
    try:
        pre[pre.index("-o") + 1] = ipath
        if subprocess.call(pre + ["-P"]) != 0:
            return subprocess.call(compile_cmd)
        h = hashlib.sha256(_compiler_id(cmd[0]))
        h.update("\0".join(key_flags).encode())
        with open(ipath, "rb") as f:
            h.update(f.read())
    finally:
        os.unlink(ipath)
    cached = os.path.join(cache_dir, h.hexdigest() + ".o")
    if os.path.exists(cached):
        shutil.copyfile(cached, obj)
        return 0
    rc = subprocess.call(compile_cmd)
    if rc == 0:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{cached}.{os.getpid()}.tmp"
        shutil.copyfile(obj, tmp)
        os.replace(tmp, cached)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

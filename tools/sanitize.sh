#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run of a representative test subset.
#
# Builds fastoptim with -DFASTOPTIM_SANITIZE=ON into its own virtualenv and build folder
# (the normal build is untouched), preloads libasan (the Python interpreter is not
# instrumented, so ASan's runtime must be loaded before anything else), and runs the
# tests. Zero reports are required: UBSan stops at its first report
# (-fno-sanitize-recover) and ASan at its first error, failing the run; ASan's reports of
# any process, forked and spawned children included, are also written under $LOG_DIR,
# which must stay empty.
#
# Leak detection is off: CPython keeps interned strings, module state and its small-object
# arenas alive until exit by design, so LeakSanitizer reports thousands of "leaks" that
# are not fastoptim's. ASan still catches every out-of-bounds access, use after free and
# double free, which is what native kernels writing into numpy's buffers can get wrong.
#
# Usage: tools/sanitize.sh [pytest arguments]   (default: the subset below)
# Env:   SANITIZE_VENV (default build/sanitize-venv), PYTHON (default python3),
#        SANITIZE_BASE_VENV (a venv whose packages -- numpy, torch, ... -- the sanitize
#        venv sees behind its own, instead of installing them again),
#        SANITIZE_BUILD_ONLY=1 (build and stop; a later run rebuilds incrementally)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${SANITIZE_VENV:-build/sanitize-venv}
LOG_DIR=build/sanitize-logs
start=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ -n "${SANITIZE_BASE_VENV:-}" ]; then
  # The base venv's site-packages behind this venv's own (a .pth appends to sys.path), so
  # the instrumented fastoptim installed here shadows the base venv's.
  site() { "$1/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }
  site "$SANITIZE_BASE_VENV" > "$(site "$VENV")/base-venv.pth"
  "$VENV/bin/python" -m pip install --quiet scikit-build-core pybind11 ninja cmake
else
  # Its own venv with only what the build and these tests need (torch pinned to the CPU build).
  "$VENV/bin/python" -m pip install --quiet numpy pytest hypothesis threadpoolctl scikit-learn \
    scikit-build-core pybind11 ninja cmake "torch==2.13.0"
fi
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
"$VENV/bin/python" -m pip install --quiet --no-build-isolation --no-deps . \
  -Ccmake.define.FASTOPTIM_SANITIZE=ON -Ccmake.build-type=RelWithDebInfo \
  -Cbuild-dir=build/sanitize
built=$(date +%s)
if [ "${SANITIZE_BUILD_ONLY:-0}" = 1 ]; then
  echo "sanitize.sh: built in $((built - start)) s"
  exit 0
fi

# Located without importing it: an ASan-linked module cannot load before the preload.
core=$(ls "$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['platlib'])")"/fastoptim/_core*.so)
deps=$(ldd "$core")  # not piped into grep -q: with pipefail, an early exit is a SIGPIPE
if ! grep -q libasan <<<"$deps" || ! grep -q libubsan <<<"$deps"; then
  echo "sanitize.sh: $core is not linked against libasan and libubsan" >&2
  exit 1
fi
LIBASAN=$(${CXX:-g++} -print-file-name=libasan.so)
if [ ! -e "$LIBASAN" ]; then
  echo "sanitize.sh: libasan not found (install the compiler's libasan package)" >&2
  exit 1
fi

rm -rf "$LOG_DIR" && mkdir -p "$LOG_DIR"
# libstdc++ right after it: ASan intercepts __cxa_throw, and finds the real one only if
# libstdc++ is loaded at startup (the Python executable does not link it).
LIBSTDCXX=$(${CXX:-g++} -print-file-name=libstdc++.so)
export LD_PRELOAD="$LIBASAN $LIBSTDCXX"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:log_path=$PWD/$LOG_DIR/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$PWD/$LOG_DIR/ubsan"
# Python objects through malloc too, so ASan sees every allocation.
export PYTHONMALLOC=malloc

if [ $# -eq 0 ]; then
  # Every test file that drives native code (kernels, losses, layers, optimizers, the
  # torch adapter, the bad-input table, threads and fork, the storage formats).
  set -- tests/test_kernels.py tests/test_reliability_inputs.py tests/test_properties.py \
    tests/test_threads_fork.py tests/test_torch_lockstep.py tests/test_losses.py \
    tests/test_nn.py tests/test_optim.py tests/test_torch_adapter.py \
    tests/test_formats.py tests/test_formats_interop.py tests/test_formats_torch.py \
    tests/test_state_formats.py tests/test_special_optimizers.py tests/test_schedulefree.py \
    tests/test_torch_clip.py tests/test_torch_arena.py tests/test_formats_fused.py \
    tests/test_formats_more.py tests/test_torch_protocol.py \
    -k "not test_point_loss_matches_reference"
  # ^ its float64 loss tolerance (8 eps for sums of 2**17 terms) holds for the vectorized
  # summation order of the normal build only; the instrumented build sums in another order
  # and lands ~1.03x over it. The normal CI run keeps that check.
fi
status=0
# --capture=sys: UBSan writes its report to the C-level stderr (it ignores log_path
# here); pytest's default fd capture would swallow it when the process aborts.
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --capture=sys "$@" || status=$?
unset LD_PRELOAD

if [ -n "$(ls -A "$LOG_DIR")" ]; then
  echo "sanitize.sh: sanitizer reports:" >&2
  cat "$LOG_DIR"/* >&2
  status=1
fi
end=$(date +%s)
echo "sanitize.sh: build $((built - start)) s, tests $((end - built)) s, status $status"
exit $status

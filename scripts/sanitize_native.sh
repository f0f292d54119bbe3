#!/bin/sh
# The telemetry C extensions' audit, repeatable (docs/telemetry.md "How the C was audited"):
#   1. both built with AddressSanitizer and UndefinedBehaviorSanitizer into a copy of src/ (never over the
#      editable install's modules), then the tests that call them and the hostile-input fuzz test
#      (NATIVE_FUZZ_EXAMPLES examples per test, default 1000) run against that build;
#   2. scripts/native_leak_loop.py on the normal build: memory growth over many calls, error paths too.
# Not in the default test run: it rebuilds, and takes ~15 minutes on two cores.
#
#   sh scripts/sanitize_native.sh [python]     (from the repository root; python: the venv's by default)
# A sanitizer's report, if any, is written to $OUT/asan.<pid> and the script exits non-zero.
set -eu
PYTHON=${1:-.venv/bin/python}
OUT=${OUT:-$(mktemp -d /tmp/sanitize-native.XXXXXX)}
mkdir -p "$OUT"
INCLUDE=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
SUFFIX=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
cp -r src "$OUT/src"
for module in _span_wire _metric_add; do
    rm -f "$OUT/src/asgi_ws_gateway/telemetry/$module"*.so
    gcc -shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
        -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -I"$INCLUDE" \
        "src/asgi_ws_gateway/telemetry/$module.c" -o "$OUT/src/asgi_ws_gateway/telemetry/$module$SUFFIX"
done
# The sanitizer runtimes preloaded (the interpreter itself is not built with them); Python's own allocator
# off (PYTHONMALLOC=malloc), or a freed object's memory stays in its arenas and a use after free goes unseen.
sanitized() {
    LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
    ASAN_OPTIONS="detect_leaks=0:quarantine_size_mb=64:log_path=$OUT/asan" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$OUT/asan" \
    PYTHONMALLOC=malloc PYTHONPATH="$OUT/src" NATIVE_FUZZ_EXAMPLES="${NATIVE_FUZZ_EXAMPLES:-1000}" \
        "$PYTHON" -m pytest -q -p no:cacheprovider --timeout=0 "$@"
}
sanitized -n 2 tests/test_telemetry_span_wire.py tests/test_telemetry_metric_add.py tests/test_telemetry_hex_ids.py \
    tests/test_telemetry_own_ids.py tests/test_telemetry_span_lifecycle.py tests/test_telemetry_otlp_blocks.py \
    tests/test_telemetry_native_borrowed.py
sanitized tests/test_telemetry_native_hostile.py  # one process: its 10 MB strings take ~7 GB a worker under ASan
if ls "$OUT"/asan.* >/dev/null 2>&1; then
    echo "sanitizer reports: $OUT/asan.*" >&2
    exit 1
fi
PYTHONPATH=src "$PYTHON" scripts/native_leak_loop.py

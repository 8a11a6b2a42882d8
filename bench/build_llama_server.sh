#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` from the llama.cpp sources vendored in the
# llama-cpp-python sdist, so the benchmark compares localllm with the very same
# llama.cpp revision it runs on. Idempotent: does nothing when the binary exists.
#
#   bench/build_llama_server.sh            # -> bench/.build/llama-server
#   JOBS=1 bench/build_llama_server.sh     # fewer compile jobs (default 2)
#   LINK=shared bench/build_llama_server.sh  # -> bench/.build/cmake-shared/bin/llama-server: llama.cpp's default
#                                          # build (shared libraries), the way llama-cpp-python builds the runner's
#   LLAMA_CPP_PYTHON_VERSION=0.3.36 ...    # another version (default: the one in .venv)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
BUILD="$HERE/.build"
LINK="${LINK:-static}"
case "$LINK" in
    static) BIN="$BUILD/llama-server"; CMAKE_DIR="$BUILD/cmake"; SHARED=OFF ;;
    shared) BIN="$BUILD/cmake-shared/bin/llama-server"; CMAKE_DIR="$BUILD/cmake-shared"; SHARED=ON ;;
    *) echo "LINK is static or shared, not $LINK" >&2; exit 2 ;;
esac
JOBS="${JOBS:-2}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"

if [[ -x "$BIN" ]]; then
    echo "llama-server already built: $BIN"
    exit 0
fi

if [[ -z "${LLAMA_CPP_PYTHON_VERSION:-}" ]]; then
    LLAMA_CPP_PYTHON_VERSION="$("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)')"
fi
VER="$LLAMA_CPP_PYTHON_VERSION"
SRC="$BUILD/llama_cpp_python-$VER"
mkdir -p "$BUILD"

if [[ ! -d "$SRC/vendor/llama.cpp" ]]; then
    echo "fetching the llama-cpp-python $VER sdist"
    "$PY" -m pip download --no-binary :all: --no-deps "llama-cpp-python==$VER" -d "$BUILD/sdist"
    tar -xzf "$BUILD/sdist/llama_cpp_python-$VER.tar.gz" -C "$BUILD"
fi

LC="$SRC/vendor/llama.cpp"
GENERATOR=()
if command -v ninja >/dev/null 2>&1 && [[ ! -f "$CMAKE_DIR/CMakeCache.txt" ]]; then
    GENERATOR=(-G Ninja)
fi
cmake -S "$LC" -B "$CMAKE_DIR" "${GENERATOR[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON \
    -DBUILD_SHARED_LIBS="$SHARED" \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF
cmake --build "$CMAKE_DIR" --target llama-server -j "$JOBS"
if [[ "$LINK" == static ]]; then
    cp "$CMAKE_DIR/bin/llama-server" "$BIN"  # (a shared build stays beside its libraries)
fi
echo "built: $BIN"
"$BIN" --version || true

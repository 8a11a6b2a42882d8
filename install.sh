#!/usr/bin/env bash
# Install localllm from this checkout into a virtual environment, optionally as a systemd service.
# Run ./install.sh --help for the options. Safe to run again: it updates what is there.
#
# Nothing runs until the last line (`main "$@"`), so a truncated copy of this file does nothing.

set -eu

usage() {
    cat <<'USAGE'
Usage: ./install.sh [options]

Installs localllm from this checkout into a Python virtual environment and links the `localllm`
command onto your PATH. llama.cpp is compiled (through llama-cpp-python): with CUDA when an NVIDIA
GPU and nvcc are both present, for the CPU otherwise, and always with its RPC backend (`localllm worker`
and LOCALLLM_RPC_SERVERS spread a model over several machines). Compiling takes several minutes the first
time; the wheel it makes is kept in ~/.cache/localllm/wheels (LOCALLLM_WHEEL_CACHE), so the next install
on this machine, into any environment, reuses it.

Options:
  --prefix DIR    virtual environment to create or update
                  (default: ~/.local/share/localllm/venv; as root /opt/localllm/venv)
  --bin-dir DIR   where to link the `localllm` command (default: ~/.local/bin; as root /usr/local/bin)
  --no-link       do not link the command anywhere
  --dev           editable install with the test tools (pytest, ruff, mypy, openai, ollama)
  --cpu           build llama.cpp for the CPU even when a GPU is present
  --cuda          build llama.cpp with CUDA (needs nvcc, the CUDA toolkit)
  --service       install a systemd unit running `localllm serve` and start it when systemd runs:
                  a user unit, or as root a system unit with a dedicated `localllm` user
  --python PY     the Python to build the environment with (default: python3, 3.10 or newer)
  --uninstall     remove the environment, the link and the unit (models are kept)
  -h, --help      show this help

Examples:
  ./install.sh                                  # for you: ~/.local/share/localllm/venv, ~/.local/bin/localllm
  sudo ./install.sh --service                   # system service as user localllm, models in /var/lib/localllm
  ./install.sh --dev --prefix .venv --no-link   # development: then scripts/test
USAGE
}

STEP="starting"
FAILED_CLEANLY=0
TMP_UNIT=""  # removed on exit
TMP_SRC=""
TMP_LLAMA=""

status() {
    STEP=$*
    printf '>>> %s\n' "$*"
}
warn() { printf 'WARNING: %s\n' "$*" >&2; }
error() {
    FAILED_CLEANLY=1
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

cleanup() {
    rc=$?
    if [ -n "$TMP_UNIT" ]; then rm -f "$TMP_UNIT"; fi
    if [ -n "$TMP_SRC" ]; then rm -rf "$TMP_SRC"; fi
    if [ -n "$TMP_LLAMA" ]; then rm -rf "$TMP_LLAMA"; fi
    if [ "$rc" -ne 0 ] && [ "$FAILED_CLEANLY" -eq 0 ]; then
        printf 'ERROR: install.sh failed (exit %s) during: %s\n' "$rc" "$STEP" >&2
        printf '       See the output above; fix the cause and run ./install.sh again (it is safe to re-run).\n' >&2
    fi
}

main() {
    SRC=$(cd "$(dirname "$0")" && pwd)
    [ -n "${HOME:-}" ] || error "HOME is not set"
    PREFIX=""
    BIN_DIR=""
    LINK=1
    DEV=0
    ACCEL=auto
    FORCED=0
    SERVICE=0
    UNINSTALL=0
    PYTHON=python3
    PYTHON_GIVEN=0

    while [ $# -gt 0 ]; do
        case "$1" in
            --prefix) [ $# -ge 2 ] || error "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
            --prefix=*) PREFIX=${1#*=}; shift ;;
            --bin-dir) [ $# -ge 2 ] || error "--bin-dir needs a directory"; BIN_DIR=$2; shift 2 ;;
            --bin-dir=*) BIN_DIR=${1#*=}; shift ;;
            --no-link) LINK=0; shift ;;
            --dev) DEV=1; shift ;;
            --cpu) ACCEL=cpu; FORCED=1; shift ;;
            --cuda) ACCEL=cuda; FORCED=1; shift ;;
            --service) SERVICE=1; shift ;;
            --python) [ $# -ge 2 ] || error "--python needs an interpreter"; PYTHON=$2; PYTHON_GIVEN=1; shift 2 ;;
            --python=*) PYTHON=${1#*=}; PYTHON_GIVEN=1; shift ;;
            --uninstall) UNINSTALL=1; shift ;;
            -h|--help) usage; exit 0 ;;
            *) error "unknown option: $1 (see ./install.sh --help)" ;;
        esac
    done

    IS_ROOT=0
    [ "$(id -u)" -eq 0 ] && IS_ROOT=1
    if [ $IS_ROOT -eq 1 ]; then
        umask 022  # the venv must be readable by the service user and by everyone using /usr/local/bin/localllm
    fi
    if [ -z "$PREFIX" ]; then
        if [ $IS_ROOT -eq 1 ]; then PREFIX=/opt/localllm/venv
        else PREFIX="${XDG_DATA_HOME:-$HOME/.local/share}/localllm/venv"; fi
    fi
    if [ -z "$BIN_DIR" ]; then
        if [ $IS_ROOT -eq 1 ]; then BIN_DIR=/usr/local/bin; else BIN_DIR="$HOME/.local/bin"; fi
    fi
    PREFIX=$(absolute "$PREFIX")
    BIN_DIR=$(absolute "$BIN_DIR")
    VPY="$PREFIX/bin/python"

    trap cleanup EXIT

    unit_location

    if [ $UNINSTALL -eq 1 ]; then
        check_no_daemon_by_hand
        uninstall
        return
    fi

    check_python
    check_no_daemon_by_hand
    stop_service_using_prefix
    make_venv
    install_package
    if [ $LINK -eq 1 ]; then link_command; fi
    if [ $SERVICE -eq 1 ]; then
        install_service
    elif [ $STOPPED_SERVICE -eq 1 ]; then
        status "Starting the localllm service again"
        systemctl ${SCOPE:+"$SCOPE"} start localllm \
            || error "systemctl could not start localllm again: see journalctl ${SCOPE:+$SCOPE }-u localllm"
    fi
    summary
}

# -- a daemon running from the environment about to be replaced -------------------------------------------
# pip replacing the files under a running daemon leaves it answering every model load with an error, so
# the service is stopped first (and started again after), and a daemon started by hand stops the install.

unit_location() {  # sets UNIT_FILE and SCOPE (systemctl's option): root's system unit, or the user's own
    if [ $IS_ROOT -eq 1 ]; then
        UNIT_FILE=/etc/systemd/system/localllm.service
        SCOPE=""
    else
        UNIT_FILE="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user/localllm.service"
        SCOPE=--user
    fi
}

service_uses_prefix() {  # the installed unit runs its daemon from $PREFIX
    [ -f "$UNIT_FILE" ] && grep -qF "ExecStart=$PREFIX/bin/localllm serve" "$UNIT_FILE"
}

service_active() {
    service_uses_prefix && systemd_running "$SCOPE" && systemctl ${SCOPE:+"$SCOPE"} is-active --quiet localllm
}

daemons_from_prefix() {  # pids of `localllm serve` processes whose Python is $PREFIX's, one per line
    for proc in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' <"$proc/cmdline" 2>/dev/null) || continue
        case "$cmd" in
            "$PREFIX/bin/"*" serve "*) printf '%s\n' "${proc#/proc/}" ;;
        esac
    done
}

check_no_daemon_by_hand() {
    service_pid=none
    if service_active; then
        service_pid=$(systemctl ${SCOPE:+"$SCOPE"} show -p MainPID --value localllm 2>/dev/null || echo none)
    fi
    pids=$(daemons_from_prefix | grep -vx "$service_pid" | tr '\n' ' ' | sed 's/ $//' || true)
    if [ -n "$pids" ]; then
        error "a localllm daemon is running from $PREFIX (pid $pids): replacing or removing its environment under it would break it (every model load would fail). Stop it first (Ctrl+C where it runs, or kill $pids), then run ./install.sh again"
    fi
}

STOPPED_SERVICE=0
stop_service_using_prefix() {
    if service_active; then
        status "Stopping the localllm service while its environment $PREFIX is replaced (it starts again after)"
        systemctl ${SCOPE:+"$SCOPE"} stop localllm \
            || error "could not stop the localllm service (systemctl ${SCOPE:+$SCOPE }stop localllm): stop it yourself, then run ./install.sh again"
        STOPPED_SERVICE=1
    fi
}

absolute() {  # expand a leading ~ (as in --prefix=~/x) and make the path absolute
    case "$1" in
        \~) printf '%s\n' "$HOME" ;;
        \~/*) printf '%s/%s\n' "$HOME" "${1#??}" ;;
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$PWD" "$1" ;;
    esac
}

check_python() {
    status "Checking $PYTHON"
    command -v "$PYTHON" >/dev/null 2>&1 \
        || error "$PYTHON not found: install Python 3.10 or newer (Debian/Ubuntu: sudo apt-get install python3 python3-venv), or name one with --python"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || error "localllm needs Python 3.10 or newer; $PYTHON is $("$PYTHON" -V 2>&1) (name another with --python)"
    if [ $IS_ROOT -eq 1 ] && [ $SERVICE -eq 1 ] && ! usable_by_others "$PYTHON"; then
        # e.g. a pyenv Python under /root: the venv links to it, and the localllm user could not run it
        if [ $PYTHON_GIVEN -eq 0 ] && [ -x /usr/bin/python3 ] && usable_by_others /usr/bin/python3 \
            && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
            status "Using /usr/bin/python3: the service user localllm could not run $(real_python "$PYTHON")"
            PYTHON=/usr/bin/python3
            PYTHON_GIVEN=1
        else
            error "the service user localllm could not run $(real_python "$PYTHON") (other users cannot read it): name a system Python with --python, e.g. --python /usr/bin/python3"
        fi
    fi
    if "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        return
    fi
    # Debian and Ubuntu ship venv's pip bootstrap separately: python3-venv for the default python3,
    # python3.X-venv for another version.
    version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    package=python3-venv
    if [ "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" != "$version" ]; then
        package="python$version-venv"
    fi
    if [ $IS_ROOT -eq 1 ] && command -v apt-get >/dev/null 2>&1; then
        status "Installing $package (Python's venv module is missing)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq \
            || error "apt-get update failed: install $package yourself (apt-get install $package) and run ./install.sh again"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null \
            || error "apt-get could not install $package: install it yourself and run ./install.sh again"
        "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 \
            || error "$package is installed but $PYTHON still has no working venv module"
    else
        error "Python's venv module is missing for $PYTHON: install it with: sudo apt-get install $package"
    fi
}

real_python() {  # the interpreter behind $1, through venv links and shims such as pyenv's
    "$1" -c 'import os, sys; print(os.path.realpath(sys.executable))'
}

usable_by_others() {  # whether other users can run Python $1: its executable and its standard library
    "$1" - <<'PY' 2>/dev/null
import os, stat, sys

def reachable(path, need):
    path = os.path.realpath(path)
    while True:
        if os.stat(path).st_mode & need != need:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path, need = parent, stat.S_IXOTH

sys.exit(not (reachable(sys.executable, stat.S_IROTH | stat.S_IXOTH)
              and reachable(os.path.dirname(os.__file__), stat.S_IROTH | stat.S_IXOTH)))
PY
}

make_venv() {
    if [ -x "$VPY" ] && "$VPY" -m pip --version >/dev/null 2>&1; then
        if [ $PYTHON_GIVEN -eq 1 ] && [ "$(real_python "$VPY")" != "$(real_python "$PYTHON")" ]; then
            status "Re-creating the virtual environment in $PREFIX with $PYTHON (it was made with $(real_python "$VPY"))"
            "$PYTHON" -m venv --clear "$PREFIX" || error "could not re-create the virtual environment in $PREFIX"
        else
            status "Updating the virtual environment in $PREFIX"
        fi
    else
        if [ -e "$PREFIX/pyvenv.cfg" ]; then
            status "Re-creating the broken virtual environment in $PREFIX"
            "$PYTHON" -m venv --clear "$PREFIX" || error "could not re-create the virtual environment in $PREFIX"
        else
            status "Creating a virtual environment in $PREFIX"
            mkdir -p "$(dirname "$PREFIX")" || error "cannot create $(dirname "$PREFIX") (choose another --prefix)"
            "$PYTHON" -m venv "$PREFIX" \
                || error "could not create a virtual environment in $PREFIX (is it writable? choose another with --prefix)"
        fi
    fi
    "$VPY" -m pip install --quiet --upgrade pip \
        || warn "could not upgrade pip in $PREFIX (is the package index reachable?); going on with $("$VPY" -m pip --version | cut -d' ' -f1-2)"
}

has_nvidia_gpu() {
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '
}

has_nvcc() {
    command -v nvcc >/dev/null 2>&1
}

check_compiler() {
    if ! { command -v cc || command -v gcc; } >/dev/null 2>&1 || ! { command -v c++ || command -v g++; } >/dev/null 2>&1; then
        error "a C and C++ compiler are needed to build llama.cpp: install them (Debian/Ubuntu: sudo apt-get install build-essential) and run ./install.sh again"
    fi
}

llama_requirement() {  # the llama-cpp-python requirement of pyproject.toml, e.g. llama-cpp-python>=0.3.16
    req=$(sed -n 's/^[[:space:]]*"\(llama-cpp-python[^"]*\)".*/\1/p' "$SRC/pyproject.toml" | head -n 1)
    printf '%s\n' "${req:-llama-cpp-python}"
}

installed_llama() {  # "<none|cpu|gpu> <rpc|norpc>": the build in $PREFIX (gpu: CUDA, even one that cannot load
    # without a driver) and whether it has llama.cpp's RPC backend (localllm worker, LOCALLLM_RPC_SERVERS)
    "$VPY" -I - <<'PY' 2>/dev/null || echo none norpc
import importlib.util
from pathlib import Path

spec = importlib.util.find_spec("llama_cpp")
if spec is None or spec.origin is None:
    print("none norpc")
else:
    lib = Path(spec.origin).parent
    gpu = any(lib.rglob("*ggml-cuda*"))
    try:
        import llama_cpp
    except Exception:  # a CUDA build without a driver: read the libraries it ships
        print("gpu" if gpu else "none", "rpc" if any(lib.rglob("*ggml-rpc*")) else "norpc")
    else:
        print("gpu" if gpu else "cpu", "rpc" if llama_cpp.llama_supports_rpc() else "norpc")
PY
}

choose_accel() {
    case "$ACCEL" in
        cuda)
            has_nvcc || error "--cuda needs nvcc (the CUDA toolkit) on PATH: install it, or drop --cuda to build for the CPU"
            status "llama.cpp with CUDA (--cuda)"
            ;;
        cpu)
            status "llama.cpp for the CPU (--cpu)"
            ;;
        auto)
            if has_nvidia_gpu && has_nvcc; then
                ACCEL=cuda
                status "llama.cpp with CUDA: found $(nvidia-smi -L | head -n 1 | cut -d'(' -f1) and nvcc"
            elif has_nvidia_gpu; then
                ACCEL=cpu
                status "llama.cpp for the CPU: an NVIDIA GPU is present but nvcc (the CUDA toolkit) is not; install it and re-run for CUDA"
            elif has_nvcc; then
                ACCEL=cpu
                status "llama.cpp for the CPU: nvcc is present but nvidia-smi lists no NVIDIA GPU (--cuda forces CUDA)"
            else
                ACCEL=cpu
                status "llama.cpp for the CPU: no NVIDIA GPU found"
            fi
            ;;
    esac
}

install_package() {
    choose_accel
    LLAMA_REQ=$(llama_requirement)
    # llama-cpp-python first, so that the main install finds it satisfied and does not build it again.
    install_llama

    if [ $DEV -eq 1 ]; then
        status "Installing localllm from $SRC (editable, with the test tools)"
        # (PYTHONWARNINGS quiets setuptools' banner about editable installs, printed on every run)
        PYTHONWARNINGS="ignore:Editable installation" "$VPY" -m pip install --quiet -e "${SRC}[dev]" \
            || error "installing localllm from $SRC failed (see the output above)"
        # TGI's client for the tests: --no-deps, as it pins huggingface_hub<1.0 (its other needs are in [dev])
        "$VPY" -m pip install --quiet --no-deps "text-generation>=0.7" \
            || error "installing the text-generation client failed (see the output above)"
    else
        status "Installing localllm from $SRC"
        copy_source
        "$VPY" -m pip install --quiet --upgrade "$TMP_SRC" \
            || error "installing localllm from $SRC failed (see the output above)"
    fi
    # -I here and below: not the current directory (often the checkout, with its localllm/) on sys.path
    if [ "$ACCEL" = cuda ] && ! has_nvidia_gpu; then
        status "Checking that localllm imports"
        "$VPY" -I -c 'import localllm' || error "localllm was installed in $PREFIX but does not import: see the output above"
        warn "no NVIDIA GPU here: the CUDA build of llama.cpp loads only where the NVIDIA driver is installed"
    else
        status "Checking that localllm and llama_cpp import"
        "$VPY" -I -c 'import localllm, llama_cpp' \
            || error "localllm was installed in $PREFIX but does not import: see the output above"
    fi
    ACCEL_INSTALLED=$(installed_llama)
}

# -- llama-cpp-python, built with llama.cpp's RPC backend ----------------------------------------------------
# Every build has -DGGML_RPC=on (`localllm worker` and LOCALLLM_RPC_SERVERS need it). pip's own wheel cache is
# keyed by the source archive, not by CMAKE_ARGS, so it could hand back a build without RPC (or without CUDA):
# builds here are always from source, and the wheel each one makes is kept in localllm's own cache, keyed by
# the version, the accelerator, the flags and the CPU (llama.cpp compiles for the CPU it is built on), so the
# next install on this machine (another checkout, CI, another environment) reuses it instead of compiling.

LLAMA_FLAGS="-DGGML_RPC=on"

wheel_cache() {  # localllm's wheel cache: LOCALLLM_WHEEL_CACHE, else the user's cache directory
    printf '%s\n' "${LOCALLLM_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/localllm/wheels}"
}

cmake_args() {  # the CMAKE_ARGS of a build for $ACCEL (the user's own CMAKE_ARGS last, so they win)
    if [ "$ACCEL" = cuda ]; then printf '%s' "-DGGML_CUDA=on "; fi
    printf '%s%s\n' "$LLAMA_FLAGS" "${CMAKE_ARGS:+ $CMAKE_ARGS}"
}

wheel_key() {  # $1: version; the cache folder of its wheel built for $ACCEL with cmake_args on this CPU
    cpu=$( { uname -m; grep -m 1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || true; } | cksum | cut -d' ' -f1)
    flags=$(cmake_args | cksum | cut -d' ' -f1)
    printf '%s/llama-cpp-python-%s-%s-flags%s-cpu%s\n' "$(wheel_cache)" "$1" "$ACCEL" "$flags" "$cpu"
}

want_llama() {  # what installed_llama must say after installing for $ACCEL
    if [ "$ACCEL" = cuda ]; then echo "gpu rpc"; else echo "cpu rpc"; fi
}

install_llama() {
    have=$(installed_llama)
    if [ "$have" = "$(want_llama)" ]; then
        status "llama-cpp-python ($(describe_llama "$have")) is already installed in $PREFIX"
        return
    fi
    if [ "${have%% *}" = gpu ] && [ "$ACCEL" = cpu ] && [ $FORCED -eq 0 ] && has_nvidia_gpu; then
        if [ "$have" = "gpu rpc" ]; then
            status "Keeping the GPU build of llama-cpp-python already in $PREFIX (--cpu replaces it)"
        else
            warn "keeping the GPU build of llama-cpp-python in $PREFIX although it lacks llama.cpp's RPC backend (localllm worker needs it): re-run with --cuda where nvcc is installed to rebuild it"
        fi
        return
    fi
    if [ "$have" != "none norpc" ]; then
        status "Replacing llama-cpp-python in $PREFIX ($(describe_llama "$have")) with a $(describe_llama "$(want_llama)")"
    fi
    TMP_LLAMA=$(mktemp -d "${TMPDIR:-/tmp}/localllm-llama.XXXXXX") || error "cannot create a temporary directory"
    status "Resolving $LLAMA_REQ"
    sdist=""
    if "$VPY" -m pip download --quiet --no-deps --no-binary :all: -d "$TMP_LLAMA/sdist" "$LLAMA_REQ" >/dev/null 2>&1; then
        sdist=$(find "$TMP_LLAMA/sdist" -name 'llama_cpp_python-*.tar.gz' | head -n 1)
    fi
    if [ -n "$sdist" ]; then
        version=$(basename "$sdist" .tar.gz)
        version=${version#llama_cpp_python-}
        key=$(wheel_key "$version")
        if install_cached_wheel "$key"; then return; fi
    else
        # no package index: the newest wheel in the cache that was built for this accelerator and flags, if any
        key=$(find "$(wheel_cache)" -maxdepth 1 -type d -name "$(basename "$(wheel_key '*')")" 2>/dev/null | sort -V | tail -n 1)
        if [ -n "$key" ] && install_cached_wheel "$key"; then return; fi
        error "could not download $LLAMA_REQ (is the package index reachable?) and no build of it is in $(wheel_cache)"
    fi
    build_llama "$sdist" "$key"
    install_cached_wheel "$key" \
        || error "llama-cpp-python was built with $(cmake_args) but reports $(describe_llama "$(installed_llama)") (see the output above)"
}

describe_llama() {  # $1: what installed_llama says, in words
    case "${1%% *}" in gpu) what="CUDA build" ;; cpu) what="CPU build" ;; *) what="missing build" ;; esac
    case "$1" in *" rpc") printf '%s with RPC\n' "$what" ;; *) printf '%s without RPC\n' "$what" ;; esac
}

install_cached_wheel() {  # $1: a cache folder; installs its wheel and checks it; false (and drops it) if unusable
    wheel=$(find "$1" -maxdepth 1 -name 'llama_cpp_python-*.whl' 2>/dev/null | head -n 1)
    [ -n "$wheel" ] || return 1
    status "Installing llama-cpp-python from localllm's wheel cache: $wheel"
    # --force-reinstall --no-deps replaces a build of the same version; the second call adds its dependencies
    if "$VPY" -m pip install --quiet --force-reinstall --no-deps "$wheel" && "$VPY" -m pip install --quiet "$wheel" \
        && [ "$(installed_llama)" = "$(want_llama)" ]; then
        return 0
    fi
    warn "the cached wheel $wheel is not a $(describe_llama "$(want_llama)") that works here: removing it and building again"
    rm -rf "$1"
    return 1
}

build_llama() {  # $1: the source archive, $2: the cache folder its wheel goes into
    check_compiler
    if [ "$ACCEL" = cuda ]; then
        status "Compiling llama-cpp-python with CUDA and RPC: this takes several minutes (10 or more on few cores)"
    else
        status "Compiling llama-cpp-python for the CPU with RPC: several minutes; the wheel is kept in $(wheel_cache) for the next install"
    fi
    # From source (--no-binary) and not from pip's cache (--no-cache-dir): either could hand back a build
    # made with other CMAKE_ARGS.
    CMAKE_ARGS="$(cmake_args)" "$VPY" -m pip wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python \
        -w "$TMP_LLAMA/wheel" "$1" \
        || error "compiling llama-cpp-python ($(cmake_args)) failed (see the output above$([ "$ACCEL" = cuda ] && echo '; check nvcc --version, or use --cpu'))"
    mkdir -p "$(wheel_cache)" || error "cannot create the wheel cache $(wheel_cache) (set LOCALLLM_WHEEL_CACHE to another folder)"
    rm -rf "$2.partial" "$2"
    if ! { mkdir "$2.partial" && mv "$TMP_LLAMA"/wheel/llama_cpp_python-*.whl "$2.partial/" && mv "$2.partial" "$2"; }; then
        error "cannot write the wheel into $(wheel_cache)"
    fi
    status "Kept the wheel in $2"
}

copy_source() {
    # pip builds a directory in place, writing build/ and localllm.egg-info into it: build a copy instead,
    # so that the checkout may be read-only and `sudo ./install.sh` leaves no root-owned files in it.
    TMP_SRC=$(mktemp -d "${TMPDIR:-/tmp}/localllm-src.XXXXXX") || error "cannot create a temporary directory"
    set -- --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist --exclude='*.egg-info' \
        --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.pytest_cache --exclude='*.gguf'
    case "$PREFIX" in "$SRC"/*) set -- "$@" --exclude="./${PREFIX#"$SRC"/}" ;; esac
    tar -C "$SRC" -cf - "$@" . | tar -C "$TMP_SRC" -xf - \
        || error "could not copy $SRC to $TMP_SRC for the build (is ${TMPDIR:-/tmp} full?)"
    [ -f "$TMP_SRC/pyproject.toml" ] || error "could not copy $SRC to $TMP_SRC for the build"
}

link_command() {
    status "Linking localllm into $BIN_DIR"
    [ -x "$PREFIX/bin/localllm" ] || error "$PREFIX/bin/localllm is missing after the install"
    mkdir -p "$BIN_DIR" || error "cannot create $BIN_DIR (choose another with --bin-dir, or --no-link)"
    if [ -e "$BIN_DIR/localllm" ] && [ ! -L "$BIN_DIR/localllm" ]; then
        error "$BIN_DIR/localllm exists and is not a link: remove it, or choose another --bin-dir (or --no-link)"
    fi
    ln -sfn "$PREFIX/bin/localllm" "$BIN_DIR/localllm" || error "cannot link localllm into $BIN_DIR"
    if [ $IS_ROOT -eq 1 ] && ! usable_by_others "$VPY"; then
        warn "only root can run $BIN_DIR/localllm: $PREFIX uses $(real_python "$VPY"), which other users cannot read (--python /usr/bin/python3 fixes that)"
    fi
    case ":$PATH:" in
        *":$BIN_DIR:"*)
            found=$(command -v localllm 2>/dev/null || true)
            if [ -n "$found" ] && [ "$found" != "$BIN_DIR/localllm" ]; then
                warn "another localllm comes first on your PATH: $found"
            fi
            ;;
        *) warn "$BIN_DIR is not on your PATH: add it (e.g. export PATH=\"$BIN_DIR:\$PATH\" in ~/.profile), or run $BIN_DIR/localllm" ;;
    esac
}

systemd_running() {  # $1: "" for the system instance, --user for the user's
    [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 \
        && systemctl ${1:+"$1"} show-environment >/dev/null 2>&1
}

unit_text() {  # $1: extra [Service] lines for the system unit ("" for a user unit), $2: WantedBy target
    cat <<UNIT
# Written by $SRC/install.sh; running it again rewrites this file.
[Unit]
Description=localllm daemon (local LLMs over Ollama's and OpenAI's APIs)
Wants=network-online.target
After=network-online.target

[Service]
# The daemon tells systemd when it listens (READY=1) and when it stops (STOPPING=1). On stop only the daemon
# gets SIGTERM (KillMode=mixed): requests in flight get 5 s to finish, streams still running then end with an
# error line, and the daemon stops its model runners itself; whatever is left after TimeoutStopSec is killed.
Type=notify
NotifyAccess=main
ExecStart=$PREFIX/bin/localllm serve
Restart=always
RestartSec=3
KillMode=mixed
TimeoutStopSec=30
# Open files: systemd's default soft limit (1,024) is what a thousand idle connections use up; the daemon raises
# its soft limit to this hard one at start, and keeps LOCALLLM_MAX_CONNECTIONS under it.
LimitNOFILE=65536
$(environment_line LOCALLLM_HOST "${LOCALLLM_HOST:-127.0.0.1:11434}")
# Sandboxing that needs no privileges (a user unit gets it too)
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
${1}
[Install]
WantedBy=$2
UNIT
}

system_sandbox() {  # the system unit's sandbox: $1 the models directory (written), the rest read-only
    # The home directories are hidden unless the environment, its Python or the models live there.
    home=yes
    src=""
    [ "$DEV" -eq 0 ] || src=$SRC  # an editable install reads the checkout
    for path in "$PREFIX" "$(real_python "$VPY")" "$1" $src; do
        case "$path" in /home/* | /root/* | /run/user/*) home=read-only ;; esac
    done
    cat <<SANDBOX
ProtectSystem=strict
ProtectHome=$home
ReadWritePaths=/var/lib/localllm
SANDBOX
    case "$1" in /var/lib/localllm/*) ;; *) printf 'ReadWritePaths=%s\n' "$1" ;; esac
    cat <<SANDBOX
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
RemoveIPC=yes
SANDBOX
    # GPUs: only their devices (PrivateDevices would hide them); without one, no devices at all.
    gpus=$(gpu_devices)
    if [ -n "$gpus" ]; then
        echo "DevicePolicy=closed"
        case "$gpus" in *nvidia*)
            printf 'DeviceAllow=%s rw\n' char-nvidia-frontend char-nvidia-uvm char-nvidia-caps char-nvidia-caps-imex ;;
        esac
        case "$gpus" in */dev/kfd*) echo "DeviceAllow=/dev/kfd rw" ;; esac
        case "$gpus" in */dev/dri*) echo "DeviceAllow=char-drm rw" ;; esac
    else
        echo "PrivateDevices=yes"
    fi
}

gpu_devices() {  # the GPU device nodes here (NVIDIA's, AMD's /dev/kfd, /dev/dri), one a line
    ls -d /dev/nvidia* /dev/kfd /dev/dri 2>/dev/null || true
}

environment_line() {  # a unit's Environment= line for $1=$2, quoted for systemd when it holds blanks or quotes
    case "$2" in
        *[[:space:]\"\\]*) printf 'Environment="%s=%s"\n' "$1" "$(printf '%s' "$2" | sed 's/[\\"]/\\&/g')" ;;
        *) printf 'Environment=%s=%s\n' "$1" "$2" ;;
    esac
}

write_unit() {  # $1: unit file, $2: text; written through a temporary file, so a failure leaves the old one
    mkdir -p "$(dirname "$1")" || error "cannot create $(dirname "$1")"
    TMP_UNIT=$(mktemp "$1.XXXXXX") || error "cannot write in $(dirname "$1")"
    printf '%s\n' "$2" >"$TMP_UNIT"
    chmod 644 "$TMP_UNIT"
    mv -f "$TMP_UNIT" "$1" || error "cannot write $1"
    TMP_UNIT=""
}

as_service_user() {
    if command -v runuser >/dev/null 2>&1; then
        runuser -u localllm -- "$@"
    else
        # shellcheck disable=SC2016 # expanded by the inner shell: $0 and $@ are the command
        su -s /bin/sh localllm -c '"$0" "$@"' "$@"
    fi
}

install_service() {
    if [ $IS_ROOT -eq 1 ]; then
        install_system_service
    else
        install_user_service
    fi
}

install_system_service() {
    MODELS_DIR=${LOCALLLM_MODELS:-/var/lib/localllm/models}  # the installer's LOCALLLM_MODELS, so the CLI agrees
    status "Setting up the system user localllm"
    if ! id localllm >/dev/null 2>&1; then
        useradd -r -s /usr/sbin/nologin -U -m -d /var/lib/localllm localllm \
            || error "could not create the system user localllm (useradd failed, see above)"
    fi
    mkdir -p "$MODELS_DIR" || error "cannot create $MODELS_DIR"
    chown localllm:localllm /var/lib/localllm "$MODELS_DIR" || error "could not give $MODELS_DIR to the localllm user"
    as_service_user test -w "$MODELS_DIR" \
        || error "the localllm user cannot write $MODELS_DIR: fix its ownership (chown -R localllm:localllm /var/lib/localllm)"
    if ! as_service_user "$VPY" -I -c 'import localllm, llama_cpp' >/dev/null 2>&1; then
        hint="choose a --prefix it can read, such as /opt/localllm/venv"
        [ $DEV -eq 0 ] || hint="$hint, without --dev (an editable install reads the checkout $SRC)"
        error "the localllm user cannot run $VPY (made with $(real_python "$VPY")): $hint"
    fi

    status "Writing $UNIT_FILE"
    write_unit "$UNIT_FILE" "$(unit_text "$(environment_line LOCALLLM_MODELS "$MODELS_DIR")
User=localllm
Group=localllm
WorkingDirectory=/var/lib/localllm
$(system_sandbox "$MODELS_DIR")
" multi-user.target)"
    if systemd_running ""; then
        status "Enabling and (re)starting the localllm service"
        systemctl daemon-reload || error "systemctl daemon-reload failed"
        systemctl enable localllm >/dev/null 2>&1 || error "systemctl enable localllm failed"
        systemctl restart localllm || error "systemctl could not start localllm: see journalctl -u localllm"
        SERVICE_STATE="running (systemctl status localllm; logs: journalctl -u localllm -f)"
        SERVICE_STARTED=1
    else
        warn "systemd is not running here, so the unit is written but not started."
        warn "Start the daemon by hand: runuser -u localllm -- env LOCALLLM_HOST=$(api_host) LOCALLLM_MODELS=$MODELS_DIR $PREFIX/bin/localllm serve"
        warn "On a machine booted with systemd: systemctl daemon-reload && systemctl enable --now localllm"
        SERVICE_STATE="installed, not started (systemd is not running)"
    fi
}

install_user_service() {
    # the unit sets LOCALLLM_MODELS when the installer has it set; else the daemon uses the default directory
    models=${LOCALLLM_MODELS:-}
    if [ -z "$models" ]; then
        models=$("$VPY" -I -c 'from localllm.config import default_models_dir; print(default_models_dir())' 2>/dev/null) \
            || models=""
    fi
    if [ -n "$models" ]; then
        if ! mkdir -p "$models" 2>/dev/null || [ ! -w "$models" ]; then
            error "the models directory $models is not writable by $(id -un): fix its ownership or permissions"
        fi
    fi

    status "Writing $UNIT_FILE"
    write_unit "$UNIT_FILE" "$(unit_text "${LOCALLLM_MODELS:+$(environment_line LOCALLLM_MODELS "$LOCALLLM_MODELS")
}" default.target)"
    if systemd_running --user; then
        status "Enabling and (re)starting the localllm user service"
        systemctl --user daemon-reload || error "systemctl --user daemon-reload failed"
        systemctl --user enable localllm >/dev/null 2>&1 || error "systemctl --user enable localllm failed"
        systemctl --user restart localllm \
            || error "systemctl --user could not start localllm: see journalctl --user -u localllm"
        SERVICE_STATE="running (systemctl --user status localllm; logs: journalctl --user -u localllm -f)"
        SERVICE_STARTED=1
        if command -v loginctl >/dev/null 2>&1 \
            && [ "$(loginctl show-user "$(id -un)" -p Linger --value 2>/dev/null)" != yes ]; then
            warn "the service stops when you log out; to keep it running: sudo loginctl enable-linger $(id -un)"
        fi
    else
        warn "systemd (your user instance) is not running or not reachable from this shell, so the unit is written but not started."
        warn "Start the daemon by hand: localllm serve"
        warn "Later, where systemd runs: systemctl --user daemon-reload && systemctl --user enable --now localllm"
        SERVICE_STATE="installed, not started (systemd is not running)"
    fi
}

uninstall() {
    status "Uninstalling localllm"
    if [ -L "$BIN_DIR/localllm" ] && [ "$(readlink "$BIN_DIR/localllm")" = "$PREFIX/bin/localllm" ]; then
        rm -f "$BIN_DIR/localllm" && status "Removed $BIN_DIR/localllm"
    fi
    unit=$UNIT_FILE
    scope=$SCOPE
    if [ -f "$unit" ]; then
        if systemd_running "$scope"; then
            systemctl ${scope:+"$scope"} disable --now localllm >/dev/null 2>&1 || true
        fi
        rm -f "$unit" && status "Removed $unit"
        if systemd_running "$scope"; then systemctl ${scope:+"$scope"} daemon-reload || true; fi
    fi
    if [ -e "$PREFIX/pyvenv.cfg" ]; then
        rm -rf "$PREFIX" && status "Removed the virtual environment $PREFIX"
        if [ "$(basename "$(dirname "$PREFIX")")" = localllm ]; then rmdir "$(dirname "$PREFIX")" 2>/dev/null || true; fi
    elif [ -e "$PREFIX" ]; then
        warn "$PREFIX is not a virtual environment: left alone"
    fi
    if [ $IS_ROOT -eq 1 ] && id localllm >/dev/null 2>&1; then
        printf '\nKept the user localllm and its models: userdel -r localllm removes both (with /var/lib/localllm).\n'
    fi
    models="${XDG_DATA_HOME:-$HOME/.local/share}/localllm/models"
    if [ -d "$models" ]; then printf 'Kept your models in %s: delete them yourself to get the space back.\n' "$models"; fi
}

api_url() {  # the address the daemon will use: LOCALLLM_HOST read as localllm reads it
    "$VPY" -I -c 'import os; from localllm.config import parse_host; print(parse_host(os.environ.get("LOCALLLM_HOST", "")).base_url)' 2>/dev/null \
        || printf 'http://%s\n' "${LOCALLLM_HOST:-127.0.0.1:11434}"
}

api_host() {
    printf '%s\n' "${LOCALLLM_HOST:-127.0.0.1:11434}"
}

summary() {
    case "$ACCEL_INSTALLED" in gpu*) build="with GPU offload (CUDA)" ;; *) build="for the CPU" ;; esac
    case "$ACCEL_INSTALLED" in *" rpc") build="$build and its RPC backend (localllm worker)" ;; esac
    version=$("$VPY" -I -c 'import localllm; print(localllm.__version__)')
    if [ $LINK -eq 1 ]; then cmd="$BIN_DIR/localllm"; else cmd="$PREFIX/bin/localllm"; fi
    printf '\nlocalllm %s is installed:\n' "$version"
    printf '  environment  %s (llama.cpp built %s%s)\n' "$PREFIX" "$build" "$([ $DEV -eq 1 ] && echo ', editable with the test tools')"
    printf '  command      %s\n' "$cmd"
    if [ $SERVICE -eq 1 ]; then printf '  service      %s: %s\n' "$UNIT_FILE" "$SERVICE_STATE"; fi
    if [ $LINK -eq 1 ]; then cmd=localllm; fi
    width=$((${#cmd} + 35))
    printf 'Next:\n'
    if [ "${SERVICE_STARTED:-0}" -eq 0 ]; then
        printf '  %-*s  # %s\n' "$width" "$cmd serve" "the daemon, in the foreground; then, in another terminal:"
    fi
    printf '  %-*s  # %s\n' "$width" "$cmd pull hf.co/<user>/<repo>[:<quant>]" "fetch a GGUF model from the Hugging Face Hub" \
        "$width" "$cmd run hf.co/<user>/<repo> \"Hello\"" "ask it something"
    printf "The API listens on %s (Ollama's /api/* and OpenAI's /v1/*).\n" "$(api_url)"
    if [ $DEV -eq 1 ]; then
        if [ "$VPY" = "$SRC/.venv/bin/python" ]; then python_env=""; else python_env="PYTHON=$VPY "; fi
        printf 'Run the tests with: %sscripts/test (it fetches the test models when they are missing)\n' "$python_env"
    fi
}

main "$@"

#!/usr/bin/env bash
# Install localllm from this checkout into a virtual environment, optionally as a systemd service.
# Run ./install.sh --help for the options. Safe to run again: it updates what is there.

set -eu

usage() {
    cat <<'USAGE'
Usage: ./install.sh [options]

Installs localllm from this checkout into a Python virtual environment and links the `localllm`
command onto your PATH. llama.cpp is compiled (through llama-cpp-python): with CUDA when an NVIDIA
GPU and nvcc are both present, for the CPU otherwise. Compiling takes several minutes the first time.

Options:
  --prefix DIR    virtual environment to create or update
                  (default: ~/.local/share/localllm/venv; /opt/localllm/venv for a root --service)
  --bin-dir DIR   where to link the `localllm` command (default: ~/.local/bin; /usr/local/bin as root)
  --no-link       do not link the command anywhere
  --dev           editable install with the test tools (pytest, ruff, mypy, openai, ollama)
  --cpu           build llama.cpp for the CPU even when a GPU is present
  --cuda          build llama.cpp with CUDA (needs nvcc)
  --service       install a systemd unit running `localllm serve` and start it when systemd runs:
                  a user unit, or as root a system unit with a dedicated `localllm` user
  --python PY     the Python to build the environment with (default: python3, 3.10 or newer)
  -h, --help      show this help
USAGE
}

status() { printf '>>> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
error() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

main() {
    SRC=$(cd "$(dirname "$0")" && pwd)
    PREFIX=""
    BIN_DIR=""
    LINK=1
    DEV=0
    ACCEL=auto
    SERVICE=0
    PYTHON=python3

    while [ $# -gt 0 ]; do
        case "$1" in
            --prefix) [ $# -ge 2 ] || error "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
            --prefix=*) PREFIX=${1#*=}; shift ;;
            --bin-dir) [ $# -ge 2 ] || error "--bin-dir needs a directory"; BIN_DIR=$2; shift 2 ;;
            --bin-dir=*) BIN_DIR=${1#*=}; shift ;;
            --no-link) LINK=0; shift ;;
            --dev) DEV=1; shift ;;
            --cpu) ACCEL=cpu; shift ;;
            --cuda) ACCEL=cuda; shift ;;
            --service) SERVICE=1; shift ;;
            --python) [ $# -ge 2 ] || error "--python needs an interpreter"; PYTHON=$2; shift 2 ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; error "unknown option: $1" ;;
        esac
    done

    IS_ROOT=0
    [ "$(id -u)" -eq 0 ] && IS_ROOT=1
    if [ -z "$PREFIX" ]; then
        if [ $SERVICE -eq 1 ] && [ $IS_ROOT -eq 1 ]; then PREFIX=/opt/localllm/venv
        else PREFIX="${XDG_DATA_HOME:-$HOME/.local/share}/localllm/venv"; fi
    fi
    if [ -z "$BIN_DIR" ]; then
        if [ $IS_ROOT -eq 1 ]; then BIN_DIR=/usr/local/bin; else BIN_DIR="$HOME/.local/bin"; fi
    fi
    case "$PREFIX" in /*) ;; *) PREFIX="$PWD/$PREFIX" ;; esac

    check_python
    make_venv
    install_package
    [ $LINK -eq 1 ] && link_command
    [ $SERVICE -eq 1 ] && install_service
    summary
}

check_python() {
    command -v "$PYTHON" >/dev/null 2>&1 || error "$PYTHON not found: install Python 3.10 or newer (Debian/Ubuntu: apt-get install python3 python3-venv)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || error "localllm needs Python 3.10 or newer; $PYTHON is $("$PYTHON" -V 2>&1)"
    if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        if [ $IS_ROOT -eq 1 ] && command -v apt-get >/dev/null 2>&1; then
            status "Installing python3-venv"
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null \
                || error "could not install python3-venv with apt-get"
        else
            error "Python's venv module is missing: install it (Debian/Ubuntu: sudo apt-get install python3-venv)"
        fi
    fi
    command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 \
        || error "a C/C++ compiler is needed to build llama.cpp (Debian/Ubuntu: sudo apt-get install build-essential cmake)"
}

make_venv() {
    if [ -x "$PREFIX/bin/python" ]; then
        status "Updating the virtual environment in $PREFIX"
    else
        status "Creating a virtual environment in $PREFIX"
        mkdir -p "$(dirname "$PREFIX")" || error "cannot create $(dirname "$PREFIX")"
        "$PYTHON" -m venv "$PREFIX" || error "could not create a virtual environment in $PREFIX"
    fi
    VPY="$PREFIX/bin/python"
    "$VPY" -m pip install --quiet --upgrade pip || error "could not upgrade pip in $PREFIX (is the package index reachable?)"
}

has_nvidia_gpu() {
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '
}

install_package() {
    if [ "$ACCEL" = auto ]; then
        if has_nvidia_gpu && command -v nvcc >/dev/null 2>&1; then
            ACCEL=cuda; status "NVIDIA GPU and nvcc found: building llama.cpp with CUDA"
        else
            ACCEL=cpu
            if has_nvidia_gpu; then status "NVIDIA GPU found but no nvcc (CUDA toolkit): building llama.cpp for the CPU"
            else status "No NVIDIA GPU found: building llama.cpp for the CPU"; fi
        fi
    elif [ "$ACCEL" = cuda ]; then
        command -v nvcc >/dev/null 2>&1 || error "--cuda needs nvcc (the CUDA toolkit) on PATH"
        status "Building llama.cpp with CUDA (--cuda)"
    else
        status "Building llama.cpp for the CPU (--cpu)"
    fi

    if [ "$ACCEL" = cuda ]; then
        if "$VPY" -c 'import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_gpu_offload())' >/dev/null 2>&1; then
            status "llama-cpp-python with GPU offload is already installed"
        else
            status "Compiling llama-cpp-python with CUDA (this takes several minutes)"
            CMAKE_ARGS="-DGGML_CUDA=on" "$VPY" -m pip install --quiet --no-cache-dir --force-reinstall \
                --no-binary llama-cpp-python "llama-cpp-python>=0.3.16" \
                || error "building llama-cpp-python with CUDA failed (see the output above; --cpu builds without CUDA)"
        fi
    elif ! "$VPY" -c 'import llama_cpp' >/dev/null 2>&1; then
        status "Compiling llama-cpp-python for the CPU (several minutes the first time; pip caches the result)"
    fi

    if [ $DEV -eq 1 ]; then
        status "Installing localllm from $SRC (editable, with the test tools)"
        "$VPY" -m pip install --quiet -e "$SRC[dev]" || error "installing localllm from $SRC failed (see the output above)"
    else
        status "Installing localllm from $SRC"
        "$VPY" -m pip install --quiet --upgrade "$SRC" || error "installing localllm from $SRC failed (see the output above)"
    fi
    "$VPY" -c 'import localllm, llama_cpp' || error "localllm was installed but does not import: see the output above"
}

link_command() {
    mkdir -p "$BIN_DIR" || error "cannot create $BIN_DIR (choose another with --bin-dir, or --no-link)"
    ln -sf "$PREFIX/bin/localllm" "$BIN_DIR/localllm" || error "cannot link localllm into $BIN_DIR"
    status "Linked $BIN_DIR/localllm"
    case ":$PATH:" in
        *":$BIN_DIR:"*) ;;
        *) warn "$BIN_DIR is not on your PATH: add it (e.g. export PATH=\"$BIN_DIR:\$PATH\" in ~/.profile)" ;;
    esac
}

systemd_running() {
    [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

unit_text() {  # $1: user line ("" for a user unit), $2: models dir line, $3: wanted-by target
    cat <<UNIT
[Unit]
Description=localllm daemon (local LLMs over Ollama's and OpenAI's APIs)
After=network-online.target

[Service]
ExecStart=$PREFIX/bin/localllm serve
$1Restart=always
RestartSec=3
Environment=LOCALLLM_HOST=127.0.0.1:11434
$2
[Install]
WantedBy=$3
UNIT
}

install_service() {
    if [ $IS_ROOT -eq 1 ]; then
        if ! id localllm >/dev/null 2>&1; then
            status "Creating the system user localllm"
            useradd -r -s /usr/sbin/nologin -U -m -d /var/lib/localllm localllm || error "could not create the user localllm"
        fi
        mkdir -p /var/lib/localllm/models
        chown -R localllm:localllm /var/lib/localllm || error "could not give /var/lib/localllm to the localllm user"
        su -s /bin/sh localllm -c "test -w /var/lib/localllm/models" \
            || error "the localllm user cannot write /var/lib/localllm/models"
        su -s /bin/sh localllm -c "'$PREFIX/bin/python' -c 'import localllm'" >/dev/null 2>&1 \
            || error "the localllm user cannot run $PREFIX/bin/python (it points to $(readlink -f "$PREFIX/bin/python")): choose a --prefix it can read, such as /opt/localllm/venv, and a system --python such as /usr/bin/python3"
        UNIT_FILE=/etc/systemd/system/localllm.service
        unit_text "User=localllm
Group=localllm
" "Environment=LOCALLLM_MODELS=/var/lib/localllm/models
" multi-user.target > "$UNIT_FILE"
        status "Wrote $UNIT_FILE"
        if systemd_running; then
            systemctl daemon-reload && systemctl enable --now localllm \
                || error "systemctl could not start localllm: see journalctl -u localllm"
            status "Started the localllm service (logs: journalctl -u localllm -f)"
        else
            warn "systemd is not running here: the unit is installed but not started."
            warn "Start the daemon by hand with: sudo -u localllm LOCALLLM_MODELS=/var/lib/localllm/models $PREFIX/bin/localllm serve"
        fi
    else
        UNIT_DIR="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
        mkdir -p "$UNIT_DIR"
        UNIT_FILE="$UNIT_DIR/localllm.service"
        unit_text "" "" default.target > "$UNIT_FILE"
        status "Wrote $UNIT_FILE"
        if systemd_running && systemctl --user daemon-reload >/dev/null 2>&1; then
            systemctl --user enable --now localllm || error "systemctl --user could not start localllm: see journalctl --user -u localllm"
            status "Started the localllm user service (logs: journalctl --user -u localllm -f)"
        else
            warn "systemd (user instance) is not running here: the unit is installed but not started."
            warn "Start the daemon by hand with: localllm serve   (later: systemctl --user enable --now localllm)"
        fi
    fi
}

summary() {
    cat <<DONE

localllm is installed in $PREFIX ($("$VPY" -c 'import localllm; print(localllm.__version__)'), llama.cpp for the $(printf '%s' "$ACCEL" | tr 'a-z' 'A-Z')).
Next:
  localllm serve                                   # start the daemon (unless the service runs it)
  localllm pull hf.co/<user>/<repo>[:<quant>]      # fetch a GGUF model from the Hugging Face Hub
  localllm run hf.co/<user>/<repo> "Hello"         # ask it something
The API listens on http://127.0.0.1:11434 (Ollama's /api/* and OpenAI's /v1/*).
DONE
}

main "$@"

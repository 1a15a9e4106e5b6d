"""A real llama.cpp server (llama-cpp-python's OpenAI-compatible server) for the served-backend
tests: built once by `benchmarks/setup_llamacpp.sh` into `.venv-bench` (reused when present),
started on a free loopback port, waited for, and stopped."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "benchmarks" / "setup_llamacpp.sh"


def server_python() -> Path:
    """The interpreter with llama-cpp-python[server]: `PPL_LLAMACPP_PYTHON`, or `.venv-bench`
    built (or reused) by the setup script."""
    configured = os.environ.get("PPL_LLAMACPP_PYTHON")
    if configured:
        return Path(configured)
    python = ROOT / ".venv-bench" / "bin" / "python"
    subprocess.run(["bash", str(SETUP)], check=True)  # returns at once when already built
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A running server: its base URL, the served model name, and its process."""

    def __init__(self, process: subprocess.Popen, port: int, model: str, log: Path) -> None:
        self.process, self.port, self.model, self.log = process, port, model, log
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def llamacpp_server(model: Path, log: Path, threads: int = 1) -> Iterator[Server]:
    """llama-cpp-python's server on `model` (a GGUF) at a free loopback port; ready on entry,
    stopped on exit."""
    port = free_port()
    command = [
        str(server_python()),
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        str(threads),
        "--verbose",
        "False",
    ]
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    server = Server(process, port, str(model), log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{server.base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"llama.cpp server not ready in 120 s: {log.read_text()[-2000:]}"
                )
            time.sleep(0.25)
        yield server
    finally:
        server.stop()


def float32_copy(source: Path, destination: Path) -> Path:
    """`source` GGUF with every tensor dequantized to float32 (same metadata): both backends
    then compute with the same float32 weights, so greedy decoding agrees."""
    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(
        str(destination), arch=reader.fields["general.architecture"].contents()
    )
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub_type=sub)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for tensor in reader.tensors:
        writer.add_tensor(
            tensor.name, dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return destination


if __name__ == "__main__":  # build (or reuse) the server's environment
    print(server_python(), file=sys.stderr)

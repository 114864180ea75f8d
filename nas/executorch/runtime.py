"""Whether ExecuTorch is installed, and loading a `.pte` program the way the measurements need.

`require()` is the one place the optional extra is imported: without it every command that needs
ExecuTorch stops with the same line (the CLI prints a `NasError` and exits 2).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.cli import quiet_logs
from nas.errors import NasError

INSTALL = "runtime=executorch needs ExecuTorch: pip install -e '.[executorch]'"


# What the extra brings: the exporter, the XNNPACK partitioner, the runtime, torchao's recipes.
REQUIRED = (
    "executorch.exir",
    "executorch.backends.xnnpack.partition.xnnpack_partitioner",
    "executorch.runtime",
    "torchao.quantization",
)


def require() -> None:
    """Import ExecuTorch and torchao (`REQUIRED`), or raise `NasError` saying how to install
    them."""
    # torchao and torch log warnings on import (CUDA-only kernels not found, pytree notices):
    # noise on a CPU machine, not news for the user.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in REQUIRED:
                importlib.import_module(name)
    except ImportError:
        raise NasError(INSTALL) from None
    finally:
        logging.disable(previous)


def load_custom_ops() -> None:
    """Register ExecuTorch's LLM ops (`llama::update_cache`, `llama::custom_sdpa`, which decode
    programs use: `nas.executorch.static_cache`) with torch and with ExecuTorch's runtime."""
    require()
    with quiet_logs():  # it logs where it found its library: not news for the user
        from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers)


def version() -> str:
    """The installed ExecuTorch version (e.g. `1.5.1+cpu`)."""
    require()
    from executorch.version import __version__

    return str(__version__)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """ExecuTorch's C++ runtime prints CPU-probe and thread-pool lines straight to file
    descriptor 2 while it loads; keep them out of the commands' output."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass(frozen=True)
class Loaded:
    """A loaded program and its `forward` method (the method needs its program kept alive)."""

    program: Any
    method: Any

    def run(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return list(self.method.execute(list(inputs)))

    def input_specs(self) -> list[tuple[tuple[int, ...], torch.dtype]]:
        """Shape and dtype of every input, in order (a `.pte` keeps no input names)."""
        meta = self.method.metadata
        specs = []
        for i in range(meta.num_inputs()):
            info = meta.input_tensor_meta(i)
            code = int(info.dtype())
            if code not in SCALAR_TYPES:
                raise ValueError(f"input {i} of the program has unsupported dtype code {code}")
            specs.append((tuple(int(d) for d in info.sizes()), SCALAR_TYPES[code]))
        return specs


# ExecuTorch's ScalarType codes (those of c10::ScalarType) of the inputs our programs take.
SCALAR_TYPES = {4: torch.long, 5: torch.float16, 6: torch.float32, 15: torch.bfloat16}


def load_method(path: str | Path, *, threads: int | None = None) -> Loaded:
    """The program at `path` and its `forward` method, with XNNPACK's thread pool at `threads`
    (None: as the runtime sizes it, one thread per core)."""
    load_custom_ops()
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    with native_stderr_silenced():
        if threads is not None:
            # "unsafe": no method may be running; nothing is, before the program loads.
            portable_lib._unsafe_reset_threadpool(int(threads))
        program = Runtime.get().load_program(Path(path))
        return Loaded(program, program.load_method("forward"))


def thread_count() -> int:
    """Threads in the runtime's pool now (what XNNPACK's kernels split their work over)."""
    require()
    from executorch.extension.pybindings import portable_lib

    return int(portable_lib._threadpool_get_thread_count())

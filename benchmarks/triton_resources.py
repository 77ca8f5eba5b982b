"""Compile every Triton kernel specialisation the fused ops launch for real GPU targets, without a GPU.

The Triton interpreter (how CI runs the kernels) executes kernels as NumPy code: it accepts programs the
compiler rejects and says nothing about registers or spills. This script swaps Triton's CUDA driver for a
stub that reports a chosen architecture (``sm_80``, ``sm_90``, ...) and launches nothing, then drives the
public functional API with ``backend="triton"`` over a grid of dtypes, kinds, uses, resample modes,
reductions and InfoNCE shapes (the tile choices of ``bench_kernels.py``'s grid). Every launch compiles its
kernel through the full pipeline (TTIR -> TTGIR -> LLVM IR -> PTX -> cubin with the bundled ``ptxas``),
and the cubins' resource usage is read back with the bundled ``cuobjdump``: registers per thread, local
memory (register spills), shared memory.

Run: ``python benchmarks/triton_resources.py`` (both architectures, the full grid; writes the
``triton_resources`` section of ``benchmarks/RESULTS.md``) or ``--quick --arch 90 --no-write`` (what
``tests/test_ops.py`` runs in CI). Exits non-zero if a kernel fails to compile or spills (``--allow-spills``
to report only).

``install_stub_driver`` is also used by the CUDA-target dry run in ``tests/test_ops.py``.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "0"  # must precede the first import of triton: compile, do not interpret
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, stated (it warns otherwise)

import argparse  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

MAX_SHARED_MEM = {80: 166912, 86: 101376, 89: 101376, 90: 232448, 100: 232448}  # bytes per block, opt-in maximum
SM_COUNT = {80: 108, 86: 84, 89: 128, 90: 132, 100: 148}


def install_stub_driver(arch: int) -> None:
    """Make Triton compile for CUDA ``sm_<arch>`` and launch nothing (CPU tensors stand in for CUDA ones)."""
    import triton
    from triton.backends.compiler import GPUTarget

    class _Utils:
        def load_binary(self, name: str, kernel: Any, shared: int, device: int) -> tuple[Any, ...]:
            return None, None, 64, 0, 1024  # module, function, n_regs, n_spills, n_max_threads (unused here)

        def get_device_properties(self, device: int) -> dict[str, int]:
            return {"max_shared_mem": MAX_SHARED_MEM.get(arch, 101376), "multiprocessor_count": SM_COUNT.get(arch, 108)}

        def unload_module(self, module: Any) -> None:
            pass

    class _StubCudaDriver:
        utils = _Utils()

        def get_current_target(self) -> Any:
            return GPUTarget("cuda", arch, 32)

        def get_active_torch_device(self) -> torch.device:
            return torch.device("cpu")

        def get_current_device(self) -> int:
            return 0

        def get_current_stream(self, device: int | None = None) -> int:
            return 0

        def launcher_cls(self, src: Any, metadata: Any) -> Any:
            return lambda *args, **kwargs: None

        def get_device_interface(self) -> Any:
            return torch.cuda

        def get_empty_cache_for_benchmark(self) -> torch.Tensor:
            return torch.empty(0)

        def clear_cache(self, cache: Any) -> None:
            pass

    triton.runtime.driver.set_active(_StubCudaDriver())


# ----------------------------------------------------------------------------------------------
# the workload: every combination the ops can launch
# ----------------------------------------------------------------------------------------------

KINDS = ("hinge", "bce", "ls")
RESAMPLES = ("area", "max", "nearest")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
# (M, D): the InfoNCE tiles of bench_kernels.py's grid (BLOCK_D = next_pow2(D), BLOCK_M = 4096 // BLOCK_D), plus an
# odd D and the released code's shape
INFONCE_SHAPES = ((8, 256), (8, 1024), (64, 256), (512, 1024), (8, 128), (4096, 128), (4096, 1024), (300, 40))


@dataclass(frozen=True)
class Call:
    op: str  # "segmenter" | "generator" | "infonce"
    dtype: str
    kind: str = "hinge"
    resample: str = "area"
    reduction: str = "mean"
    region: str = "hole"
    mask: str = "4x"  # "4x" (in-kernel resampling) | "same" (no resampling) | "bool4x"
    shape: tuple[int, int] = (8, 256)
    normalize: bool = True
    grads: bool = True


def calls(quick: bool) -> Iterator[Call]:
    if quick:  # every value of every kernel parameter at least once, every input dtype
        for dt, kind, rs in zip(DTYPES, (*KINDS, "hinge"), (*RESAMPLES, "area"), strict=True):
            for reduction in ("mean", "none"):
                yield Call("segmenter", dt, kind, rs, reduction)
                yield Call("generator", dt, kind, rs, reduction, region="hole" if reduction == "mean" else "all")
        yield Call("segmenter", "float32", mask="same")
        yield Call("generator", "bfloat16", "bce", mask="bool4x", grads=False)
        for dt, shape in zip(DTYPES, ((8, 256), (4096, 1024), (300, 40), (8, 128)), strict=True):
            for normalize in (True, False):
                yield Call("infonce", dt, shape=shape, normalize=normalize, reduction="mean" if normalize else "none")
        yield Call("infonce", "float32", shape=(64, 256), grads=False)
        return
    for dt in ("float32", "bfloat16", "float16", "float64"):
        for kind in KINDS:
            for rs in RESAMPLES:
                for reduction in ("mean", "none"):
                    yield Call("segmenter", dt, kind, rs, reduction)
                    for region in ("hole", "all"):
                        yield Call("generator", dt, kind, rs, reduction, region)
        yield Call("segmenter", dt, mask="same")
        yield Call("segmenter", dt, mask="bool4x")
        yield Call("generator", dt, mask="bool4x", grads=False)
        for shape in INFONCE_SHAPES:
            for normalize in (True, False):
                for reduction in ("mean", "none"):
                    yield Call("infonce", dt, shape=shape, normalize=normalize, reduction=reduction)
            yield Call("infonce", dt, shape=shape, grads=False)


def run_call(c: Call) -> None:
    """One eager forward and backward through the functional API on CPU tensors (compiles, launches nothing)."""
    import scatloss.functional as SF

    dtype = DTYPES[c.dtype]
    g = torch.Generator().manual_seed(0)
    if c.op == "infonce":
        m, d = c.shape
        a, p = torch.randn(2, d, generator=g).to(dtype), torch.randn(2, d, generator=g).to(dtype)
        n = torch.randn(2, m, d, generator=g).to(dtype)
        for t in (a, p, n):
            t.requires_grad_(c.grads)
        out = SF.semantic_contrastive_loss(a, p, n, normalize=c.normalize, reduction=c.reduction, backend="triton")
    else:
        # 20 x 130 logits: full 8 x 128 tiles (the largest the launcher picks) and ragged edges in both directions
        fake = torch.randn(2, 1, 20, 130, generator=g).to(dtype).requires_grad_(c.grads)
        real = torch.randn(2, 1, 20, 130, generator=g).to(dtype).requires_grad_(c.grads)
        size = (20, 130) if c.mask == "same" else (80, 520)
        hole = torch.rand(2, 1, *size, generator=g) > 0.5
        hole = hole if c.mask == "bool4x" else hole.to(dtype)
        common: dict[str, Any] = {"kind": c.kind, "resample": c.resample, "reduction": c.reduction, "backend": "triton"}
        if c.op == "segmenter":
            out = SF.scat_segmenter_loss(fake, real, hole, **common)
        else:
            out = SF.scat_generator_loss(fake, hole, region=c.region, **common)
    if c.grads:
        out.sum().backward()


# ----------------------------------------------------------------------------------------------
# resource usage of the compiled kernels
# ----------------------------------------------------------------------------------------------


def _kernels() -> list[Any]:
    from scatloss.ops import _infonce_triton, _scat_triton

    return [
        v
        for mod in (_scat_triton, _infonce_triton)
        for v in vars(mod).values()
        if type(v).__name__ == "JITFunction" and v.__module__ == mod.__name__
    ]


def _compiled(kernel: Any) -> list[Any]:
    out = []
    for cache in kernel.device_caches.values():
        out += list(cache[0].values())
    return out


_RES = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers per thread, stack, static shared and local (spill) bytes of the one function in ``cubin``."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    m = _RES.search(text)
    if m is None:
        raise RuntimeError(f"cuobjdump printed no resource line:\n{text}")
    reg, stack, shared, local = map(int, m.groups())
    return {"registers": reg, "stack": stack, "static_shared": shared, "local": local}


def compile_all(arch: int, quick: bool, log: Any = print) -> list[dict[str, Any]]:
    """Drive every call for ``sm_<arch>``; one row per compiled kernel specialisation."""
    import scatloss.ops as ops
    from scatloss._validation import set_value_checks

    install_stub_driver(arch)
    if ops._interpreting():
        raise RuntimeError("TRITON_INTERPRET is set: this script must compile the kernels, not interpret them")
    ops.resolve_backend = lambda backend, *tensors, **kw: "triton"  # type: ignore[assignment]  # CPU stands in
    set_value_checks(False)
    for k in _kernels():
        k.device_caches.clear()
    start, n_calls = time.perf_counter(), 0
    for c in calls(quick):
        run_call(c)
        n_calls += 1
    rows = []
    for k in _kernels():
        for ck in _compiled(k):
            md = ck.metadata
            res = resource_usage(ck.asm["cubin"])
            constexprs = {
                k.arg_names[i[0]]: v for i, v in ck.src.constants.items() if len(i) == 1 and k.arg_names[i[0]].isupper()
            }
            pointers = sorted({t for t in ck.src.signature.values() if isinstance(t, str) and t.startswith("*")})
            rows.append(
                {"arch": f"sm_{arch}", "kernel": k.__name__, "num_warps": md.num_warps, "shared": md.shared,
                 "constexprs": " ".join(f"{n}={v}" for n, v in sorted(constexprs.items())),
                 "pointers": ",".join(pointers), **res}
            )  # fmt: skip
    seconds = time.perf_counter() - start
    log(f"sm_{arch}: {n_calls} calls compiled {len(rows)} kernel specialisations in {seconds:.0f} s")
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Per (arch, kernel): specialisations, register ranges (training dtypes and float64 apart), shared memory,
    spills, and where the most registers go among the training dtypes."""

    def reg_range(rs: Sequence[dict[str, Any]]) -> str:
        return f"{min(r['registers'] for r in rs)}–{max(r['registers'] for r in rs)}" if rs else "–"

    table = []
    for key in dict.fromkeys((r["arch"], r["kernel"]) for r in rows):
        rs = [r for r in rows if (r["arch"], r["kernel"]) == key]
        f64 = [r for r in rs if "*fp64" in r["pointers"]]
        low = [r for r in rs if "*fp64" not in r["pointers"]]
        spill = [r for r in rs if r["local"] > 0]
        worst = max(low or rs, key=lambda r: r["registers"])
        table.append(
            [key[0], f"`{key[1]}`", str(len(rs)), reg_range(low), reg_range(f64),
             f"{max(r['shared'] for r in rs):,}", f"{max(r['num_warps'] for r in rs)}", str(len(spill)),
             f"{worst['registers']}: {worst['constexprs']} ({worst['pointers']})"]
        )  # fmt: skip
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="80,90", help="comma list of CUDA compute capabilities (default 80,90)")
    p.add_argument("--quick", action="store_true", help="a covering set of calls (every parameter value once)")
    p.add_argument("--allow-spills", action="store_true", help="report spills without failing")
    p.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md or results/")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from _common import RESULTS_DIR, RESULTS_MD, command_line, markdown_table, write_csv, write_section

    args = parse_args(argv)
    rows: list[dict[str, Any]] = []
    for arch in (int(a) for a in args.arch.split(",") if a.strip()):
        rows += compile_all(arch, args.quick)
    header = ["arch", "kernel", "specialisations", "registers / thread (fp32/bf16/fp16)", "(fp64)", "shared B (max)",
              "warps (max)", "with spills", "most registers (fp32/bf16/fp16) at"]  # fmt: skip
    import triton

    command = command_line(["benchmarks/triton_resources.py", *(sys.argv[1:] if argv is None else argv)])
    body = "\n".join(
        [
            "### Triton kernels compiled for CUDA targets without a GPU",
            "",
            f"- Command: `{command}`",
            f"- torch {torch.__version__}, Triton {triton.__version__} (bundled ptxas / cuobjdump); a stub driver "
            "reports the architecture and launches nothing; every specialisation the functional API launches over the "
            "grid (dtypes fp32/bf16/fp16/fp64, kinds, uses, resample modes, reductions, bool masks, InfoNCE tiles "
            "of the benchmark grid, with and without gradients) goes through the whole pipeline to a cubin.",
            "- Registers, local memory (spills) and static shared memory from `cuobjdump --dump-resource-usage`; "
            "`shared B` is Triton's dynamic shared memory per program.",
            "",
            markdown_table(header, summarize(rows)),
        ]
    )
    print(body)
    spills = [r for r in rows if r["local"] > 0]
    for r in spills:
        print(f"SPILL: {r}", file=sys.stderr)
    if not args.no_write:
        write_csv(RESULTS_DIR / "triton_resources.csv", rows)
        write_section("triton_resources", body, RESULTS_MD)
    return 1 if spills and not args.allow_spills else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Top-k eNTK eigenpairs three ways, side by side in one process: specprobe, dense, curvlinops.

On a tiny GPT-NeoX causal LM (about 0.9M parameters, vocabulary 512, as in
bench_measure.py) and one batch, the top 20 eigenpairs of Θ = J Jᵀ at the same tolerance:

* specprobe: ``specprobe.linalg.spectrum.spectrum`` (block Lanczos over the matrix-free operator:
  vector–Jacobian product, then J·w by double backward on one shared forward graph);
* specprobe's operator under scipy's ``eigsh`` (ARPACK): the same products, scipy's solver;
* curvlinops: ``JacobianLinearOperator`` composed with its adjoint, under scipy's
  ``eigsh`` (each product recomputes the forward pass twice, J·w by forward mode);
* the dense route of the PyTorch NTK tutorial: per-sample Jacobians with
  ``torch.func.jacrev``, Θ = J Jᵀ, ``torch.linalg.eigh``.

Two sizes: a small batch (2 sequences × 2 tokens, D = 1,024 outputs) where the dense route
fits and gives the reference eigenvalues, and the benchmark batch (4 × 16 tokens,
D = 30,720) where the dense route would need D·P·4 bytes for J alone (over 100 GiB): its
need is computed and it is skipped rather than run out of memory. Prints times, products,
peak memory above the baseline (sampled RSS on CPU), accuracy (eigenvalue error against
the dense reference, or agreement with specprobe, and the largest Ritz residual
‖Θv − λv‖/λ recomputed by specprobe's operator), and speed-ups against curvlinops. Goal:
specprobe ≥ 3× faster than curvlinops at equal accuracy.

    pip install -e ".[bench]"   # scipy
    pip install --no-deps curvlinops-for-pytorch backpack-for-pytorch einconv einops \
        linear_operator unfoldNd jaxtyping   # --no-deps: backpack would pull torchvision and
                                              # with it another torch build
    python benchmarks/bench_eigen.py [--threads 1] [--k 20] [--tol 1e-6] [--device cpu]
    python benchmarks/bench_eigen.py --speed 4,8 --repeats 3   # D = 30,720 and 61,440: the
        # default solver against curvlinops only, interleaved pairs, median of the ratios

``--threads`` (default 1) sets torch's and the BLAS libraries' threads: on a shared machine
one thread gives steadier timings. About 90 s on one CPU core, most of it the dense route
(45 s and 7.5 GiB for D = 1,024). Peak memory is RSS above the level at entry: a solve
that reuses memory the process already holds shows 0.

One run on the 2-core dev machine (shared, 1 thread, best of 3), top 20 at tol 1e-6:
D = 1,024: specprobe 0.75 s (88 products), curvlinops 3.20 s (79), dense 44.8 s: 4.3×.
D = 30,720: specprobe 1.45 s (86 products, 16.9 ms each), curvlinops 3.52 s (76, 46.3 ms
each): 2.4×; the dense route would need 113 GiB. Per product specprobe does one backward
pass and one double backward on a shared graph (≈ 3 forward passes); curvlinops does two
forward passes, a backward pass and an eager forward-mode jvp (≈ 8-9). The block of 2
that lets Lanczos notice repeated eigenvalues costs ~13% more products than ARPACK.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common import run_timed

MACHINE_MEMORY = 24 * 2**30
"""The dense route is skipped when its arrays would need more than this (the dev machine's RAM)."""


@dataclass
class Row:
    approach: str
    num_outputs: int
    time_s: float | None
    products: int | None
    peak_bytes: int | None
    eigenvalues: Any = None  # numpy (k,), descending
    eigenvectors: Any = None  # torch (D, k) float64, or None
    note: str = ""


def timed(fn: Callable[[], Any], device: str, repeats: int = 1) -> tuple[float, int, Any]:
    """Best wall time of ``repeats`` runs (the least disturbed by other load), peak memory, result."""
    times, peak, result = run_timed(fn, device, repeats)
    return min(times), peak, result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (0: library defaults)")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--batch", type=int, default=4, help="sequences in the benchmark batch")
    parser.add_argument("--seq", type=int, default=16, help="tokens per sequence in the benchmark batch")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per matrix-free solver; the best time counts"
    )
    parser.add_argument(
        "--speed",
        default="",
        help="comma list of batch sizes (sequences of --seq tokens): only the speed check, specprobe's "
        "default solver against curvlinops, interleaved --repeats times, medians of the ratios",
    )
    args = parser.parse_args()
    if args.threads:
        # Before numpy and scipy load their BLAS: ARPACK's BLAS threads would compete with torch's.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)

    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table

    from specprobe.core.operator import NTKOperator
    from specprobe.linalg.spectrum import spectrum
    from specprobe.models.tiny import tiny_causal_lm

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import scipy.sparse.linalg as scipy_linalg
    except ImportError:
        scipy_linalg = None
    try:
        from curvlinops import JacobianLinearOperator
    except ImportError:
        JacobianLinearOperator = None

    console = Console(width=150)
    inner = 1 if args.speed else args.repeats  # the speed check interleaves single runs instead
    device, k, tol = args.device, args.k, args.tol
    model = tiny_causal_lm("gpt_neox", vocab_size=512, hidden_size=128, num_layers=4, num_heads=4)
    model = model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    num_params = sum(p.numel() for p in params)
    vocab = 512
    g = torch.Generator().manual_seed(0)

    class Logits(torch.nn.Module):
        """input_ids → the logits that count (every position but the last), as curvlinops wants."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            mask = torch.ones_like(input_ids)
            return self.inner(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[:, :-1]

    logits_fn = Logits(model)

    def run_specprobe(batch: dict[str, torch.Tensor], block_size: int | None = None) -> Row:
        def solve() -> Any:
            return spectrum(
                model, batch, k=k, tol=tol, seed=0, return_eigenvectors=True, block_size=block_size
            )

        t, mem, result = timed(solve, device, inner)
        note = "" if result.all_converged else f"{k - result.num_converged} pairs not converged"
        if block_size == 1:
            note = (note + "; " if note else "") + "b=1: blind to repeated eigenvalues"
        return Row(
            f"specprobe (Lanczos, b={result.block_size})",
            result.num_outputs,
            t,
            result.products,
            mem,
            result.eigenvalues,
            result.eigenvectors,
            note,
        )

    def run_scipy_on_specprobe(batch: dict[str, torch.Tensor]) -> Row:
        assert scipy_linalg is not None

        def solve() -> Any:
            op = NTKOperator(model, batch)
            with op:
                values, vectors = scipy_linalg.eigsh(op.to_scipy(), k=k, which="LA", tol=tol)
            return op, values, vectors

        t, mem, (op, values, vectors) = timed(solve, device, inner)
        order = np.argsort(values)[::-1]
        return Row(
            "specprobe operator + scipy eigsh",
            op.num_outputs,
            t,
            op.products,
            mem,
            values[order],
            torch.from_numpy(vectors[:, order].copy()),
        )

    def run_curvlinops(batch: dict[str, torch.Tensor]) -> Row:
        assert JacobianLinearOperator is not None and scipy_linalg is not None
        ids = batch["input_ids"]
        calls = [0]

        def solve() -> Any:
            jac = JacobianLinearOperator(
                logits_fn, params, [(ids, torch.zeros(ids.shape[0]))], check_deterministic=False
            )
            theta = (jac @ jac.adjoint()).to_scipy(np.float64)

            def matvec(x: np.ndarray) -> np.ndarray:
                calls[0] += 1 if x.ndim == 1 else x.shape[1]
                return theta.matvec(x)

            counted = scipy_linalg.LinearOperator(theta.shape, matvec=matvec, dtype=np.float64)
            return scipy_linalg.eigsh(counted, k=k, which="LA", tol=tol)

        t, mem, (values, vectors) = timed(solve, device, inner)
        calls[0] //= inner
        order = np.argsort(values)[::-1]
        return Row(
            "curvlinops J Jᵀ + scipy eigsh",
            vectors.shape[0],
            t,
            calls[0],
            mem,
            values[order],
            torch.from_numpy(vectors[:, order].copy()),
        )

    def run_dense(batch: dict[str, torch.Tensor]) -> Row:
        from torch.func import functional_call, jacrev, vmap

        ids = batch["input_ids"]
        num_outputs = ids.shape[0] * (ids.shape[1] - 1) * vocab
        need = num_outputs * num_params * 4 + num_outputs**2 * 8
        if need > MACHINE_MEMORY:
            return Row(
                "dense: per-sample J, Θ = J Jᵀ, eigh",
                num_outputs,
                None,
                None,
                None,
                note=f"skipped: J ({num_outputs:,} × {num_params:,} float32) and Θ need "
                f"{need / 2**30:,.0f} GiB > {MACHINE_MEMORY / 2**30:.0f} GiB of memory",
            )
        values = {n: p.detach() for n, p in model.named_parameters()}

        def one_sample(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(logits_fn, {f"inner.{n}": v for n, v in p.items()}, (x.unsqueeze(0),))[0]

        def solve() -> Any:
            # The PyTorch NTK tutorial: per-sample Jacobians by vmap over jacrev, then Θ.
            jac = vmap(jacrev(one_sample), (None, 0))(values, ids)  # name -> (N, S-1, V, *shape)
            flat = torch.cat([j.reshape(num_outputs, -1) for j in jac.values()], 1)
            del jac
            theta = (flat @ flat.T).double()
            del flat
            eigenvalues, eigenvectors = torch.linalg.eigh(theta)
            return eigenvalues.flip(0)[:k].cpu().numpy(), eigenvectors.flip(1)[:, :k].cpu()

        t, mem, (eigenvalues, eigenvectors) = timed(solve, device)
        return Row(
            "dense: per-sample J, Θ = J Jᵀ, eigh",
            num_outputs,
            t,
            num_outputs,
            mem,
            eigenvalues,
            eigenvectors,
            note="products: one backward pass per output",
        )

    def ritz_residual(batch: dict[str, torch.Tensor], row: Row) -> float | None:
        """max_k ‖Θv_k − λ_k v_k‖/λ_k, recomputed in float64 by specprobe's operator (not timed)."""
        if row.eigenvectors is None:
            return None
        op = NTKOperator(model, batch)
        vectors = row.eigenvectors.to(dtype=torch.float64, device=op.device)
        vectors = vectors / vectors.norm(dim=0)
        lam = torch.from_numpy(np.asarray(row.eigenvalues, dtype=np.float64)).to(op.device)
        residual = (op.matmat(vectors) - vectors * lam).norm(dim=0) / lam
        return float(residual.max())

    def table(title: str, rows: list[Row], batch: dict[str, torch.Tensor], reference: Row | None) -> None:
        out = Table(title=title, title_justify="left")
        for col in (
            "approach",
            "time",
            "products",
            "time/product",
            "peak memory",
            "max |Δλ|/λ vs "
            + ("dense" if reference and reference.approach.startswith("dense") else "specprobe"),
            "max Ritz residual",
            "curvlinops time / this",
            "note",
        ):
            out.add_column(col, justify="left" if col in ("approach", "note") else "right")
        curv = next((r for r in rows if r.approach.startswith("curvlinops")), None)
        for row in rows:
            if row.time_s is None:
                out.add_row(row.approach, "", "", "", "", "", "", "", row.note)
                continue
            error = ""
            if reference is not None and reference is not row and row.eigenvalues is not None:
                ref = np.asarray(reference.eigenvalues)
                error = f"{float(np.max(np.abs(np.asarray(row.eigenvalues) - ref) / ref)):.1e}"
            residual = ritz_residual(batch, row)
            speedup = f"{curv.time_s / row.time_s:.1f}×" if curv and curv.time_s else ""
            out.add_row(
                row.approach,
                f"{row.time_s:.2f} s",
                f"{row.products:,}" if row.products is not None else "",
                f"{row.time_s / row.products * 1e3:.1f} ms" if row.products else "",
                f"{row.peak_bytes / 2**20:,.0f} MiB" if row.peak_bytes is not None else "",
                error,
                f"{residual:.1e}" if residual is not None else "",
                speedup,
                row.note,
            )
        console.print(out)

    def compare(batch: dict[str, torch.Tensor], dense_first: bool) -> list[Row]:
        rows: list[Row] = []
        dense = run_dense(batch)
        if dense_first:
            rows.append(dense)
        rows.append(run_specprobe(batch))
        rows.append(run_specprobe(batch, block_size=1))
        if scipy_linalg is not None:
            rows.append(run_scipy_on_specprobe(batch))
        if JacobianLinearOperator is not None and scipy_linalg is not None:
            rows.append(run_curvlinops(batch))
        if not dense_first:
            rows.append(dense)
        ids = batch["input_ids"]
        reference = dense if dense.time_s is not None else rows[0]
        title = (
            f"top {k} eigenpairs of the eNTK at tol={tol:g}: tiny GPT-NeoX, P={num_params:,}, "
            f"{ids.shape[0]}×{ids.shape[1]} tokens, V={vocab}, D={dense.num_outputs:,}, {device}, "
            f"{torch.get_num_threads()} thread(s); times: best of {args.repeats} (dense: 1)"
        )
        table(title, rows, batch, reference)
        return rows

    # Warm-up (first-call costs of autograd, vmap, ARPACK) on a throwaway batch.
    warm = {"input_ids": torch.randint(0, vocab, (1, 3), generator=g).to(device)}
    spectrum(model, warm, k=2)

    if args.speed:
        for sequences in (int(n) for n in args.speed.split(",")):
            batch = {"input_ids": torch.randint(0, vocab, (sequences, args.seq), generator=g).to(device)}
            speed_check(batch, run_specprobe, run_curvlinops, args.repeats, console)
        return

    small = {"input_ids": torch.randint(0, vocab, (2, 2), generator=g).to(device)}
    compare(small, dense_first=True)
    main_batch = {"input_ids": torch.randint(0, vocab, (args.batch, args.seq), generator=g).to(device)}
    rows = compare(main_batch, dense_first=False)

    curv = next((r for r in rows if r.approach.startswith("curvlinops")), None)
    if JacobianLinearOperator is None or scipy_linalg is None:
        console.print(
            "curvlinops or scipy is not installed (pip install curvlinops-for-pytorch scipy): "
            "their rows are skipped"
        )
    elif curv is not None and curv.time_s:
        for ours in rows:
            if not ours.approach.startswith("specprobe (") or not ours.time_s or not ours.products:
                continue
            ratio = curv.time_s / ours.time_s
            console.print(
                f"{ours.approach} vs curvlinops on D={ours.num_outputs:,}: {ratio:.1f}× faster "
                f"({ours.products} vs {curv.products} products, {ours.time_s / ours.products * 1e3:.1f} vs "
                f"{curv.time_s / max(curv.products or 1, 1) * 1e3:.1f} ms per product); goal ≥ 3×: "
                f"{'met' if ratio >= 3 else 'not met'}"
            )


def speed_check(
    batch: Any, ours: Callable[[Any], Row], theirs: Callable[[Any], Row], repeats: int, console: Any
) -> None:
    """specprobe's default solver against curvlinops on one batch, interleaved: medians of ratios.

    Each repeat runs curvlinops once, then specprobe once, so both see about the same load
    on a shared machine; the ratio of each pair is taken, and the median over repeats is
    reported with the medians of time per product.
    """
    import numpy as np

    ratios, rows = [], []
    for _ in range(repeats):
        curv, spec = theirs(batch), ours(batch)
        ratios.append(curv.time_s / spec.time_s)
        rows.append((curv, spec))
    curv, spec = rows[int(np.argsort(ratios)[len(ratios) // 2])]
    agree = float(np.max(np.abs(spec.eigenvalues - curv.eigenvalues) / np.abs(curv.eigenvalues)))
    per = [(c.time_s / c.products * 1e3, s.time_s / s.products * 1e3) for c, s in rows]
    console.print(
        f"D={spec.num_outputs:,}: specprobe {spec.approach} {spec.products} products, "
        f"{np.median([p[1] for p in per]):.1f} ms each; curvlinops {curv.products} products, "
        f"{np.median([p[0] for p in per]):.1f} ms each; curvlinops time / specprobe time: median "
        f"{np.median(ratios):.2f}× over {repeats} interleaved pairs ({', '.join(f'{r:.2f}' for r in ratios)}); "
        f"max |Δλ|/λ {agree:.1e}; goal ≥ 3.5×: {'met' if np.median(ratios) >= 3.5 else 'not met'}"
    )


if __name__ == "__main__":
    main()

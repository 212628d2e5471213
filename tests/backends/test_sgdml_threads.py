"""sGDML's large solves survive multithreaded BLAS (a user's shell, no OMP_NUM_THREADS).

A Cholesky factorisation of 16,000 or more rows segfaulted in OpenBLAS's SkylakeX
kernels on two threads on this project's machine; sGDML's kernel has 3 x atoms x
frames rows. OpenBLAS picks its kernels from the CPU: the test asks for the SkylakeX
ones where the CPU runs them, so that without the fix it crashes here as it did.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from threadpoolctl import threadpool_info

from ase_flatten.backends.sgdml import ONE_THREAD_ROWS, blas_threads_for

pytestmark = pytest.mark.slow  # a large sGDML fit in a new process

# In the child: record how many BLAS threads the real Cholesky ran on, then train
# through the command line as a user would.
CHILD = """
import json, sys
from threadpoolctl import threadpool_info
import scipy.linalg
from ase_flatten.backends.sgdml import import_sgdml

import_sgdml()
from sgdml.solvers import analytic

real = scipy.linalg.cho_factor

def blas_threads():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

seen = {"default": blas_threads(), "solve": []}

def spy(*args, **kwargs):
    seen["solve"].append(blas_threads())
    return real(*args, **kwargs)

analytic.sp.linalg.cho_factor = spy
from ase_flatten.cli.main import main

status = main(sys.argv[2:])
with open(sys.argv[1], "w") as handle:
    json.dump(seen, handle)
sys.exit(status)
"""


def blas_threads():
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_one_blas_thread_only_for_large_kernels():
    before = blas_threads()
    with blas_threads_for(ONE_THREAD_ROWS - 1):
        assert blas_threads() == before
    with blas_threads_for(ONE_THREAD_ROWS):
        assert blas_threads() == {1}
    assert blas_threads() == before


def crashing_kernels() -> dict:
    """``OPENBLAS_CORETYPE=SkylakeX`` where the CPU has its AVX-512 sets, else {}."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return {}
    needed = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
    return {"OPENBLAS_CORETYPE": "SkylakeX"} if needed <= flags else {}


def molecule_21_atoms(path, n_frames):
    """Benzene and ethanol 5 Å apart, rattled, labelled with ASE's EMT."""
    from ase.build import molecule
    from ase.calculators.emt import EMT
    from ase.io import write

    base = molecule("C6H6") + molecule("CH3CH2OH")
    base.positions[12:] += [0.0, 0.0, 5.0]
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(n_frames):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        frames.append(atoms)
    write(path, frames, format="extxyz")


@pytest.mark.skipif(os.cpu_count() < 2, reason="needs more than one core")
@pytest.mark.skipif(
    psutil.virtual_memory().available < 8 * 2**30,
    reason="sGDML plans 6 GB for this analytic solve; with less it solves iteratively",
)
def test_large_fit_in_a_users_shell_runs_its_solve_on_one_thread(tmp_path):
    # 21 atoms x 260 frames: a kernel of 16,380 rows, above the crash size
    molecule_21_atoms(tmp_path / "mol.extxyz", 289)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env.update(crashing_kernels())
    seen_file = tmp_path / "threads.json"
    args = ["train", str(tmp_path / "mol.extxyz"), "--backend", "sgdml"]
    args += ["-p", "sigma=20", "-p", "use_sym=false", "--size", "260"]
    args += ["--test-fraction", "0.1", "-o", str(tmp_path / "m")]
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(seen_file), *args],
        env=env,
        capture_output=True,
        text=True,
    )
    assert child.returncode == 0, child.stderr[-2000:]  # -11 was the segfault
    seen = json.loads(seen_file.read_text())
    assert max(seen["default"]) > 1  # BLAS would have used every core
    assert seen["solve"] == [[1] * len(seen["default"])]  # the solve used one
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["n_train"] == 260 and meta["test_force_rmse"] > 0

"""`blt bench`: speed measured against a baseline of the same run. One module per case (`model`, `patching`,
`training`, `generation`), what they share in `common`, the suites and the runner in `suite`."""

from blt.bench.common import machine_info, matmul_peak, torch_threads
from blt.bench.model import ModelCase
from blt.bench.patching import PatchingCase
from blt.bench.suite import CASES, SUITES, Suite, run_benchmarks, suite_named
from blt.bench.training import TrainingCase

__all__ = ["CASES", "SUITES", "ModelCase", "PatchingCase", "Suite", "TrainingCase", "machine_info", "matmul_peak",
           "run_benchmarks", "suite_named", "torch_threads"]

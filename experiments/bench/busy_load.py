"""Background processes that keep cores busy while a benchmark measures, and stop by themselves."""

from __future__ import annotations

import subprocess
import sys

BUSY_LOOPS = {
    # one core spinning in pure Python
    "spin": "import sys, time\nt = time.time() + float(sys.argv[1])\nwhile time.time() < t:\n    pass\n",
    # another torch job: 2 intra-op threads multiplying matrices (what a second training run does)
    "torch": (
        "import sys, time, torch\ntorch.set_num_threads(2)\na = torch.randn(384, 384)\n"
        "t = time.time() + float(sys.argv[1])\nwhile time.time() < t:\n    a = torch.tanh(a @ a)\n"
    ),
}


class BusyLoad:
    """``n`` background processes of ``kind`` (see ``BUSY_LOOPS``), bounded: they stop by themselves
    after ``seconds`` even if this process dies, and are killed when the context exits.

    Used to measure what a benchmark or a run reports while other work shares the cores.
    ValueError when ``n`` < 0, ``seconds`` <= 0 or ``kind`` is not a key of ``BUSY_LOOPS``.
    """

    def __init__(self, n: int, seconds: float, kind: str = "spin") -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        if kind not in BUSY_LOOPS:
            raise ValueError(f"kind must be one of {sorted(BUSY_LOOPS)}, got {kind!r}")
        self.n, self.seconds, self.kind = n, seconds, kind
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> BusyLoad:
        self.procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOPS[self.kind], str(self.seconds)])
                      for _ in range(self.n)]
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()
        self.procs = []

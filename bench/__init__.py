"""kdkit's benchmarks: ratios measured within one run, written to ``bench/results/<name>.json`` and ``.md``.

Run ``python -m bench NAME [NAME ...] [--quick] [--tiny]`` from the repository root (see ``bench/README.md``).
A benchmark is a module with ``run(options: bench.common.Options) -> bench.common.Report``; adding one is one
entry in :data:`BENCHMARKS` (modules are imported only when run, so one benchmark's imports never break another).
"""

BENCHMARKS: dict[str, str] = {
    "overhead": "bench.overhead",
    "inference": "bench.inference",
    "storage": "bench.storage",
    "cache": "bench.cache",
    "retrieval_cache": "bench.retrieval_cache",
    "gkd": "bench.gkd",
    "augment": "bench.augment",
}

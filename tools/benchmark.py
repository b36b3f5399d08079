"""Benchmark the backbones: see ``python tools/benchmark.py --help`` and mobilevision/benchmark.py."""

from mobilevision.benchmark import main

if __name__ == "__main__":
    main()

"""GPU benchmarks and the one script that runs them with the CUDA tests (bench/gpu/run.sh)."""

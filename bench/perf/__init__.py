"""Performance code: fast inference paths (accel), the throughput suites (suites), operator profiles (profiling)
and the performance goals measured side by side (goals). Timing statistics live in bench.metrics.timing."""

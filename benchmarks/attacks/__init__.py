"""The backdoor trainers (BadDiffusion, VillanDiffusion, TrojDiff) behind the benchmark zoo and the
shipped example models. Benchmark code: the installed ``hfaudit`` never imports it."""

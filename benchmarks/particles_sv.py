"""The `particles` library's bootstrap filter on the stochastic volatility model (run inside
the benchmark environment .venv-bench, which has `particles` installed).

Usage: python benchmarks/particles_sv.py DATA.npy --mu M --phi P --sigma S --sizes 100,1000
    --repeats 5
Prints JSON: per N, the wall time of each run and its log-likelihood estimate.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import particles
from particles import state_space_models as ssm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--mu", type=float, required=True)
    parser.add_argument("--phi", type=float, required=True)
    parser.add_argument("--sigma", type=float, required=True)
    parser.add_argument("--sizes", required=True)
    parser.add_argument("--repeats", required=True, help="comma-separated, one per size")
    args = parser.parse_args()
    data = np.load(args.data)
    model = ssm.StochVol(mu=args.mu, rho=args.phi, sigma=args.sigma)
    results = []
    sizes = [int(n) for n in args.sizes.split(",")]
    repeats = [int(r) for r in args.repeats.split(",")]
    for n, reps in zip(sizes, repeats, strict=True):
        times, log_z = [], []
        for seed in range(reps):
            np.random.seed(seed)  # noqa: NPY002 (particles draws from NumPy's global generator)
            fk = ssm.Bootstrap(ssm=model, data=data)
            alg = particles.SMC(fk=fk, N=n, resampling="systematic", ESSrmin=0.5)
            start = time.perf_counter()
            alg.run()
            times.append(time.perf_counter() - start)
            log_z.append(float(alg.logLt))
        results.append({"num_particles": n, "seconds": times, "log_evidence": log_z})
    print(json.dumps({"particles": particles.__version__, "results": results}))


if __name__ == "__main__":
    main()

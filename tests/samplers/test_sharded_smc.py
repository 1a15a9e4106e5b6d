"""The particle axis sharded over four (forced host) CPU devices gives the same run, and
`vmap` over independent data sets gives the runs done one by one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from ppl.models.ssm.linear_gaussian import bootstrap, simulate
from ppl.samplers import smc
from tests.samplers.test_smc import NUM_STEPS, model_1d, problem

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ppl.models.ssm.linear_gaussian import bootstrap
from ppl.sharding import shard_particles
from ppl.samplers import smc
from tests.samplers.test_smc import NUM_STEPS, problem
model, ys, _ = problem()
mesh = Mesh(np.array(jax.devices()), ("particles",))
sharded = shard_particles(bootstrap(model, ys), NamedSharding(mesh, PartitionSpec("particles")))
result = jax.jit(lambda key: smc.run(key, sharded, 64, NUM_STEPS))(jax.random.key(0))
print(json.dumps({
    "devices": len(jax.devices()),
    "particle_devices": len(result.state.particles.sharding.device_set),
    "log_evidence": float(result.log_evidence),
    "particles": np.asarray(result.particles).ravel().tolist(),
}))
"""


def test_sharded_particles_give_the_unsharded_run():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    sharded = json.loads(out.stdout.strip().splitlines()[-1])
    assert sharded["devices"] == 4 and sharded["particle_devices"] == 4
    model, ys, _ = problem()
    plain = jax.jit(lambda key: smc.run(key, bootstrap(model, ys), 64, NUM_STEPS))(
        jax.random.key(0)
    )
    np.testing.assert_allclose(sharded["log_evidence"], plain.log_evidence, rtol=1e-5)
    np.testing.assert_allclose(
        sharded["particles"], np.asarray(plain.particles).ravel(), rtol=1e-5, atol=1e-5
    )


def test_vmap_over_data_sets_equals_separate_runs():
    model = model_1d()
    data = jax.vmap(lambda key: simulate(key, model, NUM_STEPS)[1])(
        jax.random.split(jax.random.key(9), 3)
    )

    def run(ys):
        return smc.run(jax.random.key(1), bootstrap(model, ys), 32, NUM_STEPS).log_evidence

    together = jax.jit(jax.vmap(run))(data)
    for i in range(3):
        np.testing.assert_allclose(together[i], jax.jit(run)(data[i]), rtol=1e-5)

"""The prompts x particles batch sharded over four (forced host) CPU devices gives the run
done on one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = """
import json, jax, numpy as np
from jax.sharding import Mesh
from ppl.models.lm.sampling import SamplingParams
from ppl.models.reasoning.ssm import ReasoningSSM, StepSettings
from ppl.samplers import host_smc
from tests.models.reasoning.test_ssm import language_model, letter_verifier

settings = StepSettings(delimiter="\\n", max_step_tokens=3, max_steps=3,
                        sampling=SamplingParams(1.0))
runs = {}
for name, mesh in (("one", None), ("four", Mesh(np.array(jax.devices()), ("batch",)))):
    ssm = ReasoningSSM(language_model(), ["ab", "b"], letter_verifier, settings=settings,
                       mesh=mesh)
    result = host_smc.run(jax.random.key(0), ssm, 4, ssm.num_steps, ess_threshold=1.0,
                          progress=False)
    cache = result.state.particles.generations.cache
    runs[name] = {
        "devices": len(cache.keys.sharding.device_set),
        "texts": ssm.texts(result.state.particles),
        "log_evidence": result.log_evidence.tolist(),
    }
print(json.dumps({"count": len(jax.devices()), **runs}))
"""


def test_sharded_batch_gives_the_single_device_run():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["count"] == 4
    assert report["one"]["devices"] == 1 and report["four"]["devices"] == 4
    assert report["four"]["texts"] == report["one"]["texts"]
    for a, b in zip(report["four"]["log_evidence"], report["one"]["log_evidence"], strict=True):
        assert abs(a - b) < 1e-4

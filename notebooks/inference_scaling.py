# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Inference-time scaling as probabilistic inference
#
# A small-scale reproduction of the shape of Puri et al. (2025)'s main figure: accuracy
# against the number of generations per problem for particle filtering and the usual
# baselines (best-of-N, weighted best-of-N, self-consistency, beam search, DVTS), all with the
# same generator and the same process verifier, on the in-repo reasoning task.
#
# Set `PPL_NOTEBOOK_TINY=1` to run at toy sizes in seconds (the tests do).
#
# ## The state-space view
# A reasoning trace is a sequence of steps x_1, x_2, ... separated by blank lines. The language
# model is the transition p(x_t | x_{1:t-1}); a verifier scores each new step with a reward
# r_t in (0, 1), read as the probability of an observation o_t = 1 ("the steps so far are
# right"). Conditioning on o_{1:t} = 1 gives the target
#
#     p(x_{1:t} | o_{1:t} = 1) ∝ p(x_{1:t}) Π_s r_s,
#
# and a particle filter approximates it with N partial generations: extend each by one step,
# weight it by r_t, resample. Best-of-N instead samples N complete traces independently and
# keeps the best; beam search keeps the top prefixes deterministically. All are run at the same
# budget N.

# %%
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")  # no display and no notebook front end: render off screen
import jax
import matplotlib.pyplot as plt
import numpy as np

from ppl.experiments.methods import MethodInputs
from ppl.experiments.methods.particle_filtering import ParticleFiltering
from ppl.experiments.plots import accuracy_table, draw_accuracy, format_table, ratio_lines
from ppl.experiments.sweep import read_results, run_sweep
from ppl.models.reasoning.tasks import get_task
from ppl.models.reasoning.verifiers import ArithmeticSteps, Candidates

TINY = os.environ.get("PPL_NOTEBOOK_TINY") == "1"
NUM_PROBLEMS = 4 if TINY else 100
BUDGETS = [1, 4] if TINY else [1, 2, 4, 8, 16, 32]
METHODS = ["bon", "sc", "pf"] if TINY else ["bon", "wbon", "sc", "beam", "dvts", "pf"]

task = get_task("chained_arithmetic")
lm = task.load_model()
problems = task.make_problems(1, NUM_PROBLEMS)
print(problems[0].prompt + "...")
print("reference answer:", problems[0].answer)

# %% [markdown]
# ## One problem, one particle filter
# Eight particles on one problem. Each step every live particle writes one more line of
# arithmetic; the verifier checks the arithmetic of that line exactly (reward 0.95 if right,
# 0.05 if wrong), so particles that make a mistake lose weight and are resampled away.

# %%
outcome = ParticleFiltering()(
    jax.random.key(0),
    MethodInputs(lm, [problems[0].prompt], ArithmeticSteps(), budget=8, settings=task.settings),
)[0]
ranked = sorted(zip(outcome.texts, outcome.scores, strict=True), key=lambda p: -p[1])
for text, log_weight in ranked[:3]:
    print(f"weight {np.exp(log_weight):.3f}:", text.replace("\n\n", " | "))
print("selected answer:", outcome.answer, "| spent:", outcome.spent)

# %% [markdown]
# The verifier only sees arithmetic: a step "12 * 3 = 36" is correct arithmetic even when the
# problem said to multiply by 4. That makes it an imperfect process reward, the interesting
# regime for inference-time scaling.

# %%
step = "12 * 3 = 36"
check = ArithmeticSteps()(
    Candidates(
        prompts=["Start with 12. Multiply by 4. What is the result?"],
        texts=[step],
        last_steps=[step],
        finished=np.asarray([False]),
        groups=np.asarray([0]),
        rows=np.asarray([0]),
    )
)
print("reward of a correct computation on the wrong operand:", check[0])

# %% [markdown]
# ## Accuracy against budget
# The sweep writes one JSON line per (problem, method, budget); `ppl scale` runs the same
# function from the command line and `ppl plot` draws the same figure.

# %%
out = Path(tempfile.mkdtemp()) / "scaling.jsonl"
run_sweep(task, METHODS, BUDGETS, NUM_PROBLEMS, seed=1, out=out, lm=lm, progress=not TINY)
table = accuracy_table(read_results(out))
print(format_table(table))

fig, ax = plt.subplots(figsize=(6, 4))
draw_accuracy(ax, table)
plt.show()

# %% [markdown]
# ## How much budget does particle filtering save?
# Puri et al. state their gain as a scaling rate: the budget at which particle filtering
# reaches the accuracy a baseline has at its largest budget. Ratios above 1 mean particle
# filtering needs less.

# %%
print("\n".join(ratio_lines(table, "pf")))

"""`ProgramCache`: one program per (functions, settings), gone when its functions are gone."""

from __future__ import annotations

import gc
import weakref

import jax
import jax.numpy as jnp
import pytest

from ppl.samplers.programs import ProgramCache
from tests.compilations import counting_compilations


def make_density(scale):
    data = jnp.arange(3.0) * scale

    def logdensity_fn(x):
        return -0.5 * jnp.sum((x - data) ** 2)

    return logdensity_fn


def jitted_gradient(functions, step):
    (fn,) = functions
    return jax.jit(lambda x: x + step * jax.grad(fn)(x))


def test_one_program_per_function_and_settings_compiled_once():
    built = []
    cache = ProgramCache(lambda fns, step: built.append(step) or jitted_gradient(fns, step))
    fn = make_density(1.0)
    x = jnp.zeros(3)
    first = cache.get((fn,), 0.1)
    expected = x + 0.1 * jax.grad(fn)(x)
    assert jnp.allclose(first(x), expected)
    with counting_compilations() as compiled:
        again = cache.get((fn,), 0.1)
        assert jnp.allclose(again(x), expected)
    assert again is first and compiled == [] and built == [0.1]
    assert cache.get((fn,), 0.2) is not first and built == [0.1, 0.2]
    assert cache.get((make_density(1.0),), 0.1) is not first  # another closure, another program


def test_the_program_goes_with_its_function():
    cache = ProgramCache(jitted_gradient)
    fn = make_density(2.0)
    program = cache.get((fn,), 0.1)
    program(jnp.zeros(3))  # compiled
    fn_ref, program_ref = weakref.ref(fn), weakref.ref(program)
    del fn, program
    gc.collect()
    assert fn_ref() is None, "the cache kept the function alive"
    assert program_ref() is None and len(cache) == 0


def test_a_bound_method_is_cached_while_its_object_lives():
    class Model:
        def logdensity(self, x):
            return -0.5 * jnp.sum(x**2)

    cache = ProgramCache(jitted_gradient)
    model = Model()
    first = cache.get((model.logdensity,), 0.1)  # a fresh bound method each access
    assert cache.get((model.logdensity,), 0.1) is first
    model_ref = weakref.ref(model)
    del model, first
    gc.collect()
    assert model_ref() is None and len(cache) == 0


def test_a_function_that_cannot_be_weakly_referenced_still_runs_uncached():
    class Slotted:
        __slots__ = ()

        def __call__(self, x):
            return -0.5 * jnp.sum(x**2)

    cache = ProgramCache(jitted_gradient)
    fn = Slotted()
    program = cache.get((fn,), 1.0)  # x + ∇(−x²/2) = 0
    assert jnp.allclose(program(jnp.ones(3)), jnp.zeros(3))
    assert len(cache) == 0 and cache.get((fn,), 1.0) is not program


def test_a_program_outliving_its_function_says_so():
    cache = ProgramCache(lambda fns, _: fns[0])
    fn = make_density(1.0)
    caller = cache.get((fn,), None)
    del fn
    gc.collect()
    with pytest.raises(ReferenceError, match="no longer exists"):
        caller(jnp.zeros(3))

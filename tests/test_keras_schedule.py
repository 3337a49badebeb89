"""The README's Keras 3 example (docs/keras_schedule.py, verbatim): a fastoptim schedule
drives keras.optimizers.Adam inside compiled train steps on the jax and the torch backend,
and survives Keras serialization. (TensorFlow, Keras's third training backend, is not
installed by CI: too large a download for one check.)"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SNIPPET = Path(__file__).resolve().parent.parent / "docs" / "keras_schedule.py"

CHECK = r"""
import sys
exec(open(sys.argv[1]).read())
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
model.compile(optimizer=opt, loss="mse")  # jit-compiled train step (the backend's default)
rng = np.random.default_rng(0)
model.fit(rng.standard_normal((64, 4)), rng.standard_normal((64, 3)), epochs=2, batch_size=8,
          verbose=0)
steps = int(keras.ops.convert_to_numpy(opt.iterations))
lr = float(keras.ops.convert_to_numpy(opt.learning_rate))
assert steps == 16, steps
assert abs(lr - sched(steps)) <= 1e-6 * sched(steps), (lr, sched(steps))
again = keras.optimizers.deserialize(keras.optimizers.serialize(opt),
                                     custom_objects={"FastoptimSchedule": FastoptimSchedule})
for step in (0, 1, 2500, 9999, 20000):
    got = float(keras.ops.convert_to_numpy(again._learning_rate(step)))
    want = sched(min(step, 9999))
    assert abs(got - want) <= 1e-6 * want, (step, got, want)
print("ok", keras.backend.backend())
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_keras_snippet_on_each_backend(backend, tmp_path):
    for module in ("keras", backend):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (pip install keras {backend})")
    env = {**os.environ, "KERAS_BACKEND": backend}
    proc = subprocess.run([sys.executable, "-c", CHECK, str(SNIPPET)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["ok", backend]

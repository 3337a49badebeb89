import keras
import numpy as np
from fastoptim import schedules


class FastoptimSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A fastoptim schedule as a Keras one: tabulated for `steps` steps (then held at the
    last value) and looked up with keras.ops, so compiled train steps work on every
    backend."""

    def __init__(self, schedule, steps):
        self.schedule, self.steps = schedule, int(steps)
        self.table = np.array([schedule(s) for s in range(self.steps)], dtype="float32")

    def __call__(self, step):
        i = keras.ops.minimum(keras.ops.cast(step, "int32"), self.steps - 1)
        return keras.ops.take(self.table, i)

    def get_config(self):
        return {"schedule": self.schedule.get_config(), "steps": self.steps}

    @classmethod
    def from_config(cls, config):
        return cls(schedules.from_config(config["schedule"]), config["steps"])


sched = schedules.one_cycle(1e-2, total_steps=10_000)
opt = keras.optimizers.Adam(learning_rate=FastoptimSchedule(sched, 10_000))

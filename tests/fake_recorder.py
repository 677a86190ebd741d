"""A stand-in for attention.AttentionRecorder in heat-map tests: one dict of maps per sampling step."""


class StepRecorder:
    """``maps()`` returns the current step's maps; ``reset()`` moves to the next step (as the sampler does)."""

    def __init__(self, steps):
        self.steps = list(steps)
        self.resets = 0

    def maps(self):
        return self.steps[self.resets]

    def reset(self):
        self.resets += 1

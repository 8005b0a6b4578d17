"""Spaces for the worker tests that misbehave inside a worker process (imported by the workers).

``KillingSpace`` is the tiny MLP space of :mod:`conftest_search` whose ``materialize`` ends its
own process with SIGKILL, as the kernel's out-of-memory killer would: always for one plan key,
or once for any plan when a marker file exists (the worker that removes it dies).
"""

import os
import signal

from conftest_search import TinySpace
from moprune.space.base import Plan


class KillingSpace(TinySpace):
    """The tiny MLP space whose materialization kills its process (see the module doc)."""

    def __init__(self, model, *, kill_key=None, kill_once_file=None, **kwargs):
        super().__init__(model, **kwargs)
        self.kill_key = kill_key
        self.kill_once_file = kill_once_file

    def materialize(self, x_or_plan):
        plan = x_or_plan if isinstance(x_or_plan, Plan) else self.decode(x_or_plan)
        if plan.key == self.kill_key:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kill_once_file is not None:
            try:
                os.remove(self.kill_once_file)
            except FileNotFoundError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().materialize(plan)

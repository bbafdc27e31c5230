"""Periodic work of the agent's main loop, registered by name instead of written inline.

The loop calls `run_due()` once per turn; a task runs when its interval has
passed since it last ran (an interval of 0 runs it every turn: for tasks that
keep their own pace, like the watchdog). Tasks run in registration order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional


@dataclass
class PeriodicTask:
    name: str
    interval_s: float
    action: Callable[[], None]
    last_run: Optional[float] = None  # monotonic seconds; None: never ran


@dataclass
class Scheduler:
    clock: Callable[[], float] = time.monotonic
    tasks: List[PeriodicTask] = field(default_factory=list)

    def every(self, interval_s: float, name: str, action: Callable[[], None]) -> None:
        if interval_s < 0:
            raise ValueError(f"task {name}: negative interval {interval_s}")
        if any(task.name == name for task in self.tasks):
            raise ValueError(f"task {name} is already registered")
        self.tasks.append(PeriodicTask(name, interval_s, action))

    def run_due(self) -> List[str]:
        """Run every task that is due; the names of those that ran."""
        ran = []
        for task in self.tasks:
            now = self.clock()
            if task.last_run is None or now - task.last_run >= task.interval_s:
                task.action()
                task.last_run = now
                ran.append(task.name)
        return ran

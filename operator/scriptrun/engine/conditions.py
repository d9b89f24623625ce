"""Kubernetes-style conditions: set one, keeping lastTransitionTime unless the status flips."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from scriptrun.engine import clock
from scriptrun.model.common import Condition


def set_condition(
    conditions: list[Condition], ctype: str, value: bool, reason: str, message: str, now: datetime, generation: int
) -> None:
    status: Literal["True", "False"] = "True" if value else "False"
    for i, cond in enumerate(conditions):
        if cond.type == ctype:
            ltt = cond.last_transition_time if cond.status == status else clock.fmt(now)
            conditions[i] = Condition(
                type=ctype,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=ltt,
                observed_generation=generation,
            )
            return
    conditions.append(
        Condition(
            type=ctype,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=clock.fmt(now),
            observed_generation=generation,
        )
    )

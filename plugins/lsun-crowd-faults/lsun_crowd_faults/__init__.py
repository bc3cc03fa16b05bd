"""The fault-injecting crowd, registered through the ``lsun_crowd`` entry point like any vendor.

``[crowd] adapter = "faults"`` with ``[crowd.settings] wraps = "mock"`` (any adapter's name) runs
a project through that adapter with seeded failures in between; see :mod:`lsun_crowd_faults.injector`.
"""

from __future__ import annotations

from lsun_crowd.hookspecs import hookimpl
from lsun_crowd.plugins import CrowdAdapter, RegisterCrowdAdapter
from lsun_crowd_faults.injector import FaultPlan, FaultyCrowd

__all__ = ["FaultPlan", "FaultyCrowd"]


@hookimpl
def register_crowd_adapters(register: RegisterCrowdAdapter) -> None:
    register(
        CrowdAdapter(
            "faults",
            "wraps another adapter and injects seeded timeouts, throttling, errors, lost responses and bad pages",
            FaultyCrowd.from_settings,
        )
    )

"""The simulated crowd, registered through the ``lsun_crowd`` entry point like any vendor."""

from __future__ import annotations

from lsun_crowd.hookspecs import hookimpl
from lsun_crowd.plugins import CrowdAdapter, RegisterCrowdAdapter
from lsun_crowd_mock.simulated import CrowdMix, SimulatedCrowd, load_truth_file

__all__ = ["CrowdMix", "SimulatedCrowd", "load_truth_file"]


@hookimpl
def register_crowd_adapters(register: RegisterCrowdAdapter) -> None:
    register(CrowdAdapter("mock", "simulated crowd: seeded workers, spammers, latency", SimulatedCrowd.from_settings))

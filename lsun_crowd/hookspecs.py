"""The hooks a plugin may implement. Each receives a ``register`` callback (or the CLI app).

Every hook is documented with its exact signature in ``docs/plugins.md`` and has a test named
``test_hook_<name>``; two meta-tests keep both true.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer

    from lsun_crowd.plugins import RegisterBackbone, RegisterCrowdAdapter

hookspec = pluggy.HookspecMarker("lsun_crowd")
hookimpl = pluggy.HookimplMarker("lsun_crowd")


@hookspec
def register_crowd_adapters(register: RegisterCrowdAdapter) -> None:
    """Register crowd adapters, one ``register(CrowdAdapter(...))`` call each.

    :param register: call it with a :class:`lsun_crowd.plugins.CrowdAdapter`.
    """


@hookspec
def register_backbones(register: RegisterBackbone) -> None:
    """Register image backbones that turn images into embeddings.

    :param register: call it with a :class:`lsun_crowd.plugins.Backbone`.
    """


@hookspec
def register_commands(cli: typer.Typer) -> None:
    """Add sub-commands to the ``lsun-crowd`` command line.

    :param cli: the root Typer application; add commands or sub-apps to it.
    """

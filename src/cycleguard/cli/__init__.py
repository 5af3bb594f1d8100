"""The admin and runtime-plane commands of the ``cycleguard`` command line.

``cycleguard.__main__`` registers them with :func:`add_admin_commands`; they
call :class:`cycleguard.admin.AdminClient` and :class:`cycleguard.CyclesClient`.
"""

from __future__ import annotations

from cycleguard.cli._admin_commands import add_admin_commands as add_admin_commands

__all__ = ("add_admin_commands",)

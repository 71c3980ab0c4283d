"""The agent as a Windows service, through pywin32.

UNTESTED: there is no Windows machine in this project's CI. What runs on Linux and is tested
there is everything this module relies on: ``core.service_control.DrainOnStop`` (the stop
request of the service control manager, made on its own thread, becomes the same graceful
drain as SIGTERM), ``run_agent`` (the agent's run, given that adapter instead of signal
handlers) and the ``service`` command's wiring. The pywin32 calls below are the documented
ones (``win32serviceutil.ServiceFramework``), not exercised by any test.

    bridgehead-agent service install [--config C:\\ProgramData\\Bridgehead\\agent.toml] [--user ACCOUNT] [--no-start]
    bridgehead-agent service start | stop | remove | status
    bridgehead-agent service host        # what the service control manager runs (frozen binary)

The service runs as the virtual account ``NT SERVICE\\bridgehead-agent`` unless ``--user``
names another (LocalSystem would be far more than it needs). The configuration's path is
kept in the service's registry parameters (pywin32's custom options), so the same command
line serves a frozen binary and a virtualenv (pywin32's ``pythonservice.exe`` hosts it then).
Log lines also go to the Application event log, source ``bridgehead-agent``.
"""

from __future__ import annotations

import logging
import logging.handlers
import math
import sys

from bridgehead.core.service_control import DrainOnStop, ServiceError

SERVICE_NAME = "bridgehead-agent"
DISPLAY_NAME = "Bridgehead agent"
DESCRIPTION = "Bridgehead relay agent: an outbound connection to the control plane, running its jobs"
DEFAULT_ACCOUNT = "NT SERVICE\\bridgehead-agent"
DEFAULT_CONFIG = "C:\\ProgramData\\Bridgehead\\agent.toml"
DELIVERY_S = 10  # after the drain, the agent's time to deliver results (service._drain)


def stop_wait_hint_ms(drain_timeout_s: float) -> int:
    """How long the service control manager should wait for a stop: the drain and delivery."""
    return (math.ceil(drain_timeout_s) + DELIVERY_S + 5) * 1000


def event_log_handler() -> logging.Handler:
    """The Application event log (the standard library's handler; it needs pywin32)."""
    handler = logging.handlers.NTEventLogHandler(SERVICE_NAME)
    handler.setLevel(logging.INFO)
    return handler


if sys.platform == "win32":
    import servicemanager
    import win32service
    import win32serviceutil

    class AgentWindowsService(win32serviceutil.ServiceFramework):  # type: ignore[misc]
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args: list[str]) -> None:
            super().__init__(args)
            self.drain = DrainOnStop(event_log_handler())

        def SvcStop(self) -> None:  # noqa: N802 - pywin32's name
            from bridgehead.agent.config import load_agent_section

            config = win32serviceutil.GetServiceCustomOption(self._svc_name_, "config")
            hint = stop_wait_hint_ms(load_agent_section(config).drain_timeout_s)
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=hint)
            self.drain.request_stop()  # the same graceful drain as SIGTERM

        def SvcDoRun(self) -> None:  # noqa: N802 - pywin32's name
            from bridgehead.agent.cli import run_agent

            config = win32serviceutil.GetServiceCustomOption(self._svc_name_, "config")
            servicemanager.LogInfoMsg(f"{SERVICE_NAME}: starting with {config}")
            try:
                run_agent(config, drain=self.drain)
            except Exception as exc:  # noqa: BLE001 - the event log is the only place it can go
                servicemanager.LogErrorMsg(f"{SERVICE_NAME} stopped: {exc}")
                raise
            servicemanager.LogInfoMsg(f"{SERVICE_NAME}: stopped")

    class WindowsController:
        """``ServiceController`` through the service control manager."""

        def __init__(self, config: str | None = None, account: str | None = None) -> None:
            self.config = config
            self.account = account

        def install(self, start: bool) -> list[str]:
            from bridgehead.core.service_control import program_path

            exe, frozen = program_path("bridgehead-agent")
            win32serviceutil.InstallService(
                f"{__name__}.AgentWindowsService",
                SERVICE_NAME,
                DISPLAY_NAME,
                startType=win32service.SERVICE_AUTO_START,
                exeName=exe if frozen else None,  # a virtualenv: pywin32's pythonservice.exe
                exeArgs="service host" if frozen else None,
                userName=self.account,
                description=DESCRIPTION,
            )
            win32serviceutil.SetServiceCustomOption(SERVICE_NAME, "config", self.config)
            lines = [f"installed {SERVICE_NAME} (runs as {self.account}, config {self.config})"]
            if start:
                win32serviceutil.StartService(SERVICE_NAME)
                lines.append(f"started {SERVICE_NAME}")
            return lines

        def start(self) -> list[str]:
            win32serviceutil.StartService(SERVICE_NAME)
            return [f"started {SERVICE_NAME}"]

        def stop(self) -> list[str]:
            win32serviceutil.StopService(SERVICE_NAME)
            return [f"stopping {SERVICE_NAME} (a graceful drain)"]

        def remove(self) -> list[str]:
            win32serviceutil.RemoveService(SERVICE_NAME)
            return [f"removed {SERVICE_NAME}"]

        def status(self) -> tuple[bool, list[str]]:
            try:
                state = win32serviceutil.QueryServiceStatus(SERVICE_NAME)[1]
            except Exception as exc:  # noqa: BLE001 - pywintypes.error: not installed, most often
                return False, [f"{SERVICE_NAME}: not installed or not readable ({exc})"]
            running = state == win32service.SERVICE_RUNNING
            return running, [f"{SERVICE_NAME}: {'running' if running else f'state {state}'}"]

    def host() -> int:
        """Run under the service control manager (the frozen binary's ``service host``)."""
        servicemanager.Initialize()
        servicemanager.PrepareToHostSingle(AgentWindowsService)
        servicemanager.StartServiceCtrlDispatcher()
        return 0

else:

    def host() -> int:
        raise ServiceError("service host is what the Windows service manager runs; on Linux use systemd")

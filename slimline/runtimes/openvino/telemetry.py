"""slimline never sends OpenVINO's or NNCF's usage telemetry.

Both report usage through `openvino-telemetry` (a dependency of nncf and of openvino's converter), which
sends each event from a forked `multiprocessing.Process`. Without network access (slimline's own CI, air-
gapped servers) that child blocks in the resolver on a lock another thread of the parent held at fork
time, and the run then hangs at exit waiting for it (seen here: `slimline run` never returning after a
finished report). It also writes a client id under the user's home. So before slimline touches OpenVINO
or NNCF, telemetry is switched off in-process: the singleton's consent is false and its sender does
nothing, for an instance made before or after this call. Nothing is written, nothing is sent.
"""

from __future__ import annotations

from typing import Any

_disabled = False


class _NoSender:
    def send(self, *args: Any, **kwargs: Any) -> None:
        return None

    def force_shutdown(self, *args: Any, **kwargs: Any) -> None:
        return None


def _silence(instance: Any) -> None:
    instance.consent = False
    instance.sender = _NoSender()


def disable_telemetry() -> None:
    """Idempotent; a no-op where openvino-telemetry is not installed."""
    global _disabled
    if _disabled:
        return
    try:
        from openvino_telemetry import main as telemetry
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:
        _disabled = True
        return

    # Declined consent: the library's own "opted out" path (no dialog, no client id written, nothing sent).
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED
    original_init = telemetry.Telemetry.init

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        _silence(self)

    telemetry.Telemetry.init = init
    telemetry.Telemetry.send_event = lambda self, *args, **kwargs: None  # even force_send=True
    existing = getattr(telemetry.Telemetry, "_SingletonMetaClass__single_instance", None)
    if existing is not None:
        _silence(existing)
    _disabled = True

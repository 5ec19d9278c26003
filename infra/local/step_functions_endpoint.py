"""Step Functions of the local stack: a moto server of its own, started and stopped by the local AWS endpoint,
which forwards the Step Functions API to it (`python -m infra.local.step_functions_endpoint`).

moto's state machine interpreter costs about 110 MB at import, as much as the rest of the endpoint at its
busiest: apart, each process stays within its own bounded size. The executions' Lambda tasks call the endpoint
(MOTO_PORT), which routes them to the functions host. Environment: LOCAL_STEP_FUNCTIONS_PORT, MOTO_PORT.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import uuid
from typing import Any

from werkzeug.serving import make_server

from infra.local.stop_signal import StopSignal

PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): a signal for this process when its parent dies


def enable_step_functions_execution() -> None:
    """Make moto run state machines for real; their Lambda tasks then call the endpoint's Invoke API route (each
    request gets a thread of its own, so an execution calling back into the endpoint never waits for a free one)."""
    from moto.core.config import default_user_config
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_lambda
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    default_user_config["stepfunctions"]["execute_state_machine"] = True
    # moto 5.2 drops InvocationType from lambda:invoke tasks, so an "Event" task would run synchronously.
    state_task_service_lambda._SUPPORTED_API_PARAM_BINDINGS["invoke"].add("InvocationType")

    # moto 5.2 names an execution started without a name "None": the second one would already exist.
    start_execution = StepFunctionsParserBackend.start_execution

    def start_named_execution(
        self: StepFunctionsParserBackend, state_machine_arn: str, name: str | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        return start_execution(self, state_machine_arn, name or str(uuid.uuid4()), *args, **kwargs)

    StepFunctionsParserBackend.start_execution = start_named_execution  # type: ignore[method-assign]


def stop_with_parent() -> None:
    """SIGTERM when the endpoint dies, even by SIGKILL: no orphan keeps running the state machines."""
    # Not Linux: the endpoint's process group still takes it down.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def main() -> None:
    stop_with_parent()
    port = int(os.environ["LOCAL_STEP_FUNCTIONS_PORT"])
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

    enable_step_functions_execution()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, name="step-functions", daemon=True).start()
    StopSignal().install().wait()
    server.shutdown()


if __name__ == "__main__":
    main()

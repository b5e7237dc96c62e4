#!/usr/bin/env python3
"""Closes two races in LocalStack 4.9.2's activity tasks, which lose tasks under load where AWS
never does, so that the end-to-end tests fail only for the worker's faults.
    tests/rig/localstack-races.py VENV

1. A scheduled activity task is put in the activity's queue before its execution registers the
   task's token. A `GetActivityTask` that takes it in between finds no execution for the token,
   answers `InvalidToken`, and the task is gone: its execution waits out `TimeoutSeconds`. Fixed
   by registering the token first.
2. An activity Task state with `HeartbeatSeconds` sets up its heartbeat wait only after recording
   `ActivityStarted`. A `SendTaskSuccess`/`SendTaskFailure` that arrives before that is stored
   but not seen: the state waits out `HeartbeatSeconds` and fails `States.Timeout`. Fixed by
   reading the stored outcome once the wait is set up, before waiting.

Idempotent: a file already fixed is left alone. A file that has neither the original text nor the
fix (another LocalStack version) stops the install with the file's name.
"""
import pathlib
import sys

PACKAGE = "localstack/services/stepfunctions"

FIXES = [
    (
        "asl/eval/callback/callback.py",
        """        maybe_activity.add_task(ActivityTask(task_token=callback_id, task_input=activity_input))

        callback_endpoint = ActivityCallbackEndpoint(
            callback_id=callback_id, activity_input=activity_input
        )
        self._pool[callback_id] = callback_endpoint
        return callback_endpoint
""",
        """        callback_endpoint = ActivityCallbackEndpoint(
            callback_id=callback_id, activity_input=activity_input
        )
        self._pool[callback_id] = callback_endpoint
        maybe_activity.add_task(ActivityTask(task_token=callback_id, task_input=activity_input))
        return callback_endpoint
""",
    ),
    (
        "asl/component/state/state_execution/state_task/state_task_activitiy.py",
        """            heartbeat_endpoint = callback_endpoint.setup_heartbeat_endpoint(
                heartbeat_seconds=heartbeat_seconds
            )
            while (
""",
        """            heartbeat_endpoint = callback_endpoint.setup_heartbeat_endpoint(
                heartbeat_seconds=heartbeat_seconds
            )
            outcome = callback_endpoint.get_outcome()
            while (
""",
    ),
]


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: localstack-races.py VENV", file=sys.stderr)
        return 2
    venv = pathlib.Path(sys.argv[1])
    packages = sorted(venv.glob(f"lib/python3*/site-packages/{PACKAGE}"))
    if len(packages) != 1:
        print(f"no single LocalStack Step Functions package under {venv}", file=sys.stderr)
        return 1
    for relative, original, fixed in FIXES:
        path = packages[0] / relative
        text = path.read_text()
        if text.count(fixed) == 1 and original not in text:
            continue
        if text.count(original) != 1:
            print(f"{path}: the text to fix is not there (another LocalStack version?)", file=sys.stderr)
            return 1
        path.write_text(text.replace(original, fixed))
        print(f"fixed {path.relative_to(venv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

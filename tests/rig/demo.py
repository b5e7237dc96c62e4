"""Drives `make demo` against LocalStack: the original README state machine, one execution."""
import json
import os
import sys
import time
import urllib.request

import boto3

sfn = boto3.client("stepfunctions")
suffix = str(int(time.time()))


def readme_state_machine(activity, livy_port):
    # The original project's README example (HeartbeatSeconds added), shared with the e2e tests.
    with open(os.path.join(os.path.dirname(__file__), "readme-state-machine.json")) as f:
        sm = json.load(f)
    sm["States"]["SparkPi"]["Resource"] = activity
    sm["States"]["SparkPi"]["Parameters"]["LivyPort"] = livy_port
    return sm


def main():
    if sys.argv[1] == "create-activity":
        print(sfn.create_activity(name=f"example.spark-job-{suffix}")["activityArn"])
        return
    _, _, activity, livy_port, livy_url = sys.argv
    sm = sfn.create_state_machine(
        name=f"spark-pi-{suffix}",
        definition=json.dumps(readme_state_machine(activity, int(livy_port))),
        roleArn="arn:aws:iam::000000000000:role/stepfunctions",
    )["stateMachineArn"]
    ex = sfn.start_execution(stateMachineArn=sm, input=json.dumps({"SparkClusterPublicDNS": "127.0.0.1"}))
    print("execution started; waiting for Spark ...", flush=True)
    deadline = time.time() + 300
    while True:
        d = sfn.describe_execution(executionArn=ex["executionArn"])
        if d["status"] != "RUNNING" or time.time() > deadline:
            break
        time.sleep(1)
    print(f"execution {d['status']}")
    if d["status"] != "SUCCEEDED":
        print(f"error: {d.get('error')}\ncause: {d.get('cause')}")
        sys.exit(1)
    output = json.loads(d["output"])
    print("output:", json.dumps(output, indent=2))
    with urllib.request.urlopen(f"{livy_url}/batches/{output['batchId']}/log?size=-1") as r:
        lines = json.load(r)["log"]
    pi = [line for line in lines if "Pi is roughly" in line]
    print(pi[0] if pi else "no 'Pi is roughly' line in the batch log")
    sys.exit(0 if pi else 1)


main()

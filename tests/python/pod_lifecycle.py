"""A pod's life through the official Python `kubernetes` client: create, wait for Running,
read its logs, delete, wait until it is gone.

usage: pod_lifecycle.py KUBECONFIG IMAGE NAME
"""

import sys
import time

from kubernetes import client, config
from kubernetes.client.rest import ApiException


def wait(what, check, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    sys.exit(f"timed out waiting for {what}")


def main():
    kubeconfig, image, name = sys.argv[1:4]
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"client": "python"}),
        spec=client.V1PodSpec(
            termination_grace_period_seconds=1,
            containers=[
                client.V1Container(
                    name="counter",
                    image=image,
                    image_pull_policy="Never",
                    env=[client.V1EnvVar(name="INTERVAL_MS", value="100")],
                )
            ],
        ),
    )
    created = core.create_namespaced_pod("default", pod)
    print(f"created {created.metadata.name} uid={created.metadata.uid}")

    def running():
        p = core.read_namespaced_pod(name, "default")
        return p if p.status.phase == "Running" else None

    p = wait("Running", running)
    print(f"running on {p.spec.node_name} ip={p.status.pod_ip}")

    def logs():
        text = core.read_namespaced_pod_log(name, "default")
        return text if "count 2" in text else None

    text = wait("logs", logs)
    print("logs: " + text.splitlines()[0])

    core.delete_namespaced_pod(name, "default")

    def gone():
        try:
            core.read_namespaced_pod(name, "default")
            return False
        except ApiException as e:
            if e.status == 404:
                return True
            raise

    wait("deletion", gone)
    print("deleted")


if __name__ == "__main__":
    main()

"""Worker processes of a MultiWorkerMirroredStrategy cluster on 127.0.0.1, for the slow tests."""

import json
import os
import pathlib
import socket
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(argv_of, log_of, count=2):
    """Starts `count` processes `python *argv_of(i)`, `TF_CONFIG` naming the cluster and index i,
    stdout and stderr into `log_of(i)`. Returns the processes."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(count)]}
    processes = []
    for i in range(count):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        with open(log_of(i), "w") as log:
            processes.append(subprocess.Popen([sys.executable, *argv_of(i)], cwd=REPO_ROOT, env=env,
                                              stdout=log, stderr=subprocess.STDOUT))
    return processes

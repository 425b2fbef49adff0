"""The reference writer: pre-rendered NetworkPolicies sent straight to the API server.

Runs as its own process (like the operator does) so that it never competes with the benchmark's
watcher for one interpreter. Reads a JSON job on stdin::

    {"kubeconfig": "...", "concurrency": 16,
     "requests": [["POST" | "APPLY", "/apis/.../networkpolicies[/name]", body], ...]}

and prints ``{"start": <epoch>, "end": <epoch>, "errors": n, "first_error": "..."}``: ``start``
is taken after the connection pool is warm, right before the first real write, so process
start-up is not billed to the reference.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from kubeaccess import Access, Api, ApiFailure

FIELD_MANAGER = "nsbaseline-bench-reference"


async def run(job: dict[str, Any]) -> dict[str, Any]:
    concurrency = int(job["concurrency"])
    api = Api(Access.from_kubeconfig(Path(job["kubeconfig"])), limit=concurrency)
    # Warm the pool: open `concurrency` keep-alive connections before the clock starts.
    await asyncio.gather(*(api.text("/version") for _ in range(concurrency)))
    queue: asyncio.Queue[list[Any]] = asyncio.Queue()
    for item in job["requests"]:
        queue.put_nowait(item)
    errors: list[str] = []

    async def worker() -> None:
        while not queue.empty():
            verb, path, body = queue.get_nowait()
            try:
                if verb == "APPLY":
                    await api.request(
                        "PATCH",
                        path,
                        body,
                        params={"fieldManager": FIELD_MANAGER, "force": "true"},
                        content_type="application/apply-patch+yaml",
                    )
                else:
                    await api.request(verb, path, body)
            except ApiFailure as exc:
                errors.append(str(exc))

    start, cpu_start = time.time(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    end, cpu = time.time(), time.process_time() - cpu_start
    await api.close()
    return {
        "start": start,
        "end": end,
        "cpu": cpu,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def main() -> None:
    job = json.load(sys.stdin)
    print(json.dumps(asyncio.run(run(job))))


if __name__ == "__main__":
    main()

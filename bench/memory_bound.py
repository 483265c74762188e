"""A worker's peak memory with N maximal requests at once from N clients (issue 29).

    python bench/zipf_model.py --vocab 10000 --softmax full --out runs/zipf10k-full
    python bench/memory_bound.py --model runs/zipf10k-full --clients 1 16 64
    python bench/memory_bound.py --model runs/zipf10k-full --code /tmp/old --clients 1 16

Each client has its own loopback address (127.0.0.2, 127.0.0.3, ...), so none is held back by
the per-client queue limit: every request is admitted, up to ``NEXTWORD_MAX_CONCURRENCY`` (64).
One server (one worker) per N; reported: its resident memory idle (after a small request) and
its peak (VmHWM) while the N requests were answered, and the peak's growth per request. From
these, the bound per worker that docs/serving.md states.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from fairness import heavy_body  # noqa: E402

from app.launch import start_server  # noqa: E402


def memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def run(model: Path, code: Path, clients: int, body: bytes) -> dict[str, float | int]:
    env = {"OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(code)}
    process, url = start_server([f"m={model}"], env=env, cwd=code)
    try:
        httpx.post(f"{url}/v1/score", json={"sentences": ["w5 w6"]}, timeout=60)
        idle = memory_mb(process.pid, "VmRSS")

        def send(i: int) -> int:
            transport = httpx.HTTPTransport(local_address=f"127.0.0.{2 + i}")
            with httpx.Client(transport=transport, timeout=1800) as c:
                return c.post(f"{url}/v1/score", content=body,
                              headers={"content-type": "application/json"}).status_code  # fmt: skip

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            codes = list(pool.map(send, range(clients)))
        took = time.perf_counter() - started
        peak = memory_mb(process.pid, "VmHWM")
    finally:
        process.terminate()
        process.wait(timeout=120)
    return {
        "clients": clients, "answered": codes.count(200), "refused": codes.count(503),
        "other": len(codes) - codes.count(200) - codes.count(503), "seconds": round(took, 1),
        "rss_idle_mb": round(idle), "rss_peak_mb": round(peak),
        "growth_per_request_mb": round((peak - idle) / clients, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    config = json.loads((args.model / "config.json").read_text())
    body = heavy_body(int(config["model"]["vocab_size"]), args.sentences, args.tokens)
    rows = [run(args.model.resolve(), args.code.resolve(), n, body) for n in args.clients]
    print(json.dumps({"code": str(args.code.resolve()), "model": str(args.model),
                      "machine": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M"),
                      "request": f"{args.sentences} sentences x {args.tokens} tokens",
                      "rows": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()

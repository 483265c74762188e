"""Check a running nextword over HTTP: ready, and sensible answers. Exit 1 with the reason if not.

python .ci/check_service.py http://127.0.0.1:18080 [expected-model-name]
"""

from __future__ import annotations

import math
import sys
import time

import httpx


def main(url: str, model: str | None) -> None:
    for _ in range(120):
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    else:
        sys.exit(f"{url}/readyz never answered 200")
    r = httpx.post(
        f"{url}/v1/candidates", json={"context": "the time", "candidates": ["traveller", "zebra"]}
    )
    r.raise_for_status()
    data = r.json()
    assert model is None or data["model"] == model, data
    shares = [x["share"] for x in data["results"]]
    assert math.isclose(sum(shares), 1.0, rel_tol=1e-9), shares
    assert all(x["log_prob"] < 0 for x in data["results"]), data
    r = httpx.post(
        f"{url}/v1/score", json={"sentences": ["the time traveller smiled", "smiled the"]}
    )
    r.raise_for_status()
    results = r.json()["results"]
    assert len(results) == 2 and all(math.isfinite(x["log_prob"]) for x in results), results
    assert httpx.post(f"{url}/v1/candidates", json={"candidates": []}).status_code == 422
    print(f"ok: {url} answers ({data['model']}: {[round(s, 3) for s in shares]})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)

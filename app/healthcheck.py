"""Container health check: ``python3 -m app.healthcheck /healthz`` exits 0 on a 200 answer.

Reads the port from NEXTWORD_PORT like the server does, so the check follows a changed port.
Standard library only: it runs every few seconds and must start fast.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/healthz"
    url = f"http://127.0.0.1:{os.environ.get('NEXTWORD_PORT', '8000')}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""examples/sweep.py runs against the real exchange as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from .conftest import Provider, Users

pytestmark = pytest.mark.server

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sweep.py"


def test_the_sweep_example(users: Users, market: Provider) -> None:
    buyer = users.new("40")
    key = buyer.auth.create_api_key("sweep").key
    market.offer("2", gpus=3)
    env = {**os.environ, "CAPEX_EXCHANGE": buyer.base_url, "CAPEX_API_KEY": key}
    run = subprocess.run(
        [sys.executable, str(EXAMPLE), "--gpus", "1", "--max-price", "2.5", "--lr", "0.3", "0.1", "0.03",
         "--steps", "3", "--python", sys.executable, "--timeout", "90"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    print(out)
    assert "submitted 3 runs" in out, out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("0.3 ", "0.1 ", "0.03 "))]
    assert len(rows) == 3, out
    for row in rows:
        lr, state, exit_code, billed, price, cost, loss = row
        assert (state, exit_code, Decimal(price)) == ("exited", "0", Decimal(2)), row
        assert Decimal(cost) > 0 and loss != "-", row
    total = sum(Decimal(row[5]) for row in rows)
    assert f"total cost {total} credits" in out, out
    assert buyer.wallet.get().available == Decimal(40) - total

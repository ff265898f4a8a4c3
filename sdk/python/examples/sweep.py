"""A learning-rate sweep on Capex: one job per learning rate, submitted together; waits
for them all and prints what each run cost, to the micro-credit.

    export CAPEX_EXCHANGE=http://127.0.0.1:8080 CAPEX_API_KEY=capex_...
    python sweep.py --class H100-80GB --gpus 1 --max-price 2.5 --lr 0.3 0.1 0.03 0.01

Each run executes a tiny stand-in for ``train.py`` (it prints a falling loss); swap
``TRAIN`` and ``--image`` for your real training container.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import capex

TRAIN = r"""
import os, random, time
lr, steps = float(os.environ["LR"]), int(os.environ["STEPS"])
random.seed(lr)
loss = 2.5
for step in range(1, steps + 1):
    loss *= 1 - min(lr, 0.5) * random.uniform(0.2, 0.6)
    print(f"step {step} loss {loss:.4f}", flush=True)
    time.sleep(0.5)
print(f"final_loss {loss:.4f}", flush=True)
"""


def final_loss(job: capex.Job) -> str:
    for line in job.lines():
        if line.startswith("final_loss "):
            return line.split()[1]
    return "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--class", dest="cls", default="H100-80GB", help="GPU class (market)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per run")
    parser.add_argument("--hours", default="0.25", help="most hours a run may hold its GPUs")
    parser.add_argument("--max-price", default="2.5", help="credits per GPU-hour, at most")
    parser.add_argument("--lr", nargs="+", default=["0.3", "0.1", "0.03"], help="learning rates to try")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--python", default="python3", help="the interpreter on the GPU host")
    parser.add_argument("--image", default=None, help="container image to run in (default: the host's plain process)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the sweep")
    args = parser.parse_args(argv)

    with capex.Client() as client:  # CAPEX_EXCHANGE, CAPEX_API_KEY
        before = client.wallet.get().available
        jobs = {
            lr: client.jobs.submit(
                cls=args.cls,
                gpus=args.gpus,
                hours=args.hours,
                max_price=args.max_price,
                command=[args.python, "-c", TRAIN],
                env={"LR": lr, "STEPS": str(args.steps)},
                image=args.image,
            )
            for lr in args.lr
        }
        print(f"submitted {len(jobs)} runs: " + ", ".join(f"lr={lr} -> {job.id}" for lr, job in jobs.items()))
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            views = dict(zip(jobs, pool.map(lambda job: job.wait(timeout=args.timeout), jobs.values())))

        print(f"\n{'lr':>6}  {'state':<8} {'exit':>4} {'billed s':>9} {'price':>8} {'cost':>10}  final loss")
        total = Decimal(0)
        for lr, job in jobs.items():
            view = views[lr]
            total += job.cost
            print(
                f"{lr:>6}  {view.state:<8} {view.exit_code if view.exit_code is not None else '-':>4} "
                f"{view.billed_seconds:>9} {view.price:>8} {job.cost:>10}  {final_loss(job)}"
            )
        spent = before - client.wallet.get().available
        print(f"\ntotal cost {total} credits (wallet: {spent} spent)")
        failed = [lr for lr, view in views.items() if view.exit_code != 0]
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

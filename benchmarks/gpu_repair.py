"""Seconds per image repair at 256 px on a device, paper settings and the default, beside the paper's Table 7.

    python benchmarks/gpu_repair.py --device cuda [--size 256] [--count 4] [--precision 32]

FastFlow and arpro's default DDPM (3.0 M parameters) are built at ``--size`` and trained for
one step only: the time of a repair does not depend on what the networks learned. One short
warm-up repair comes first, so that CUDA's start-up and kernel selection are not timed.
"""

from __future__ import annotations

import argparse

import torch

import arpro
from arpro.plugin_api import registry
from machine import describe

PAPER_TABLE_7 = {"baseline": 126.50, "guided": 236.37}  # vision, median seconds per repair (their GPU)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="32")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--count", type=int, default=4)
    args = parser.parse_args()
    data = registry.get("dataset", "textures")(root=None, category="brick", image_size=args.size, n_train=8,
                                              n_test_normal=2, n_test_anomalous=args.count)
    fabric = arpro.launch_fabric(device=args.device, precision=args.precision)
    models = []
    for kind, name in (("detector", "fastflow"), ("repairer", "ddpm")):
        model = registry.get(kind, name).for_dataset(data)
        model.fit(data.train().x, steps=1, batch_size=2, progress=False)
        models.append(arpro.place(model.eval(), fabric))
    detector, repairer = models
    x = data.test().anomalous().x[: args.count]
    configs = {
        "paper (ddpm, 1000 steps, from noise, ∇ at x_t)": dict(scheduler="ddpm", steps=1000, start="noise", guide_on="xt",
                                                                eta_schedule="sigma"),
        "default (ddim, 50 steps, sdedit 0.6, detector's defaults)": {},
    }
    arpro.repair(x[:1], detector, repairer, settings=arpro.RepairSettings.for_detector(detector, steps=5), progress=False)
    print(f"{args.count} images of {args.size} px, device {fabric.device} "
          f"({torch.cuda.get_device_name(fabric.device) if fabric.device.type == 'cuda' else 'cpu'}), precision {args.precision}; {describe()}")
    print(f"{'configuration':58s} {'baseline s':>11s} {'infill s':>9s} {'guided s':>9s}   (seconds per repair)")
    for name, given in configs.items():
        settings = arpro.RepairSettings.for_detector(detector, **given)
        # each arm alone: arms run together share one batch and one wall time
        s = {arm: arpro.repair(x, detector, repairer, settings=settings, arms=(arm,), progress=False).arms[arm].seconds / len(x)
             for arm in arpro.ARMS}
        print(f"{name:58s} {s['baseline']:11.2f} {s['infill']:9.2f} {s['guided']:9.2f}")
    print(f"{'paper, Table 7 (vision, median)':58s} {PAPER_TABLE_7['baseline']:11.2f} {'':9s} {PAPER_TABLE_7['guided']:9.2f}")


if __name__ == "__main__":
    main()

"""A simulated three-stage water process: the embedded default time-series dataset.

Raw water enters tank 1 through the inlet valve MV101; pump P101 moves it through valve
MV201 into tank 2, P201 through MV301 into tank 3, and P301 delivers it to a varying
demand. Each stage has level (LIT), in/out flow (FIT), pump discharge pressure (PIT),
conductivity-like quality (AIT) and temperature (TIT) sensors, plus the pump and valve
states, and each pump's motor current (CUR) and vibration RMS (VIB); a dosing pump P002
corrects the quality of tank 1. Pumps and valves follow hysteresis controllers on the
levels, so the sensors are physically coupled: a pump moves level, flow, pressure, current
and vibration together, a closed downstream valve dead-heads a pump (flow 0, pressure up),
quality mixes from tank to tank with the flow. A pump draws current with its flow and
vibrates more the further its flow is from the design point.

Attacks, injected into the test series only and labelled per time step:

- ``stuck``: a sensor repeats its value from the onset;
- ``spike``: a sensor jumps by several standard deviations for 1–3 steps;
- ``drift``: a sensor's reading drifts linearly away from the truth;
- ``actuator``: a pump or valve is forced to the opposite state (the physics follow);
- ``blockage``: a running pump's line is partly closed (a valve manipulation or a clog): its
  flow falls to 35–60%, so its pressure rises, its current falls and its vibration rises, a
  sustained level shift across coupled sensors (the physics follow);
- ``bias``: a sensor reads a constant 3–5 standard deviations off the truth;
- ``noise``: cavitation in a running pump: its vibration (5–8×) and current (3×) noise grow.

Stuck, drift and actuator attacks last 10–40 steps, spikes 1–3; blockage, bias and noise are
sustained, 80–200 steps (longer than the default window of 64).

Labels cover each attack from ``start`` to ``settled``: past ``stop`` while any valve is not
fully open. Normal operation never fills a tank far enough for its controller to close a valve,
so a closing valve after an actuator attack or a blockage is the attack's aftermath (a tank it
overfilled, draining), not normal operation.

Everything is deterministic from the seed. 12 000 rows (the default test series) took 0.26 s
on this machine with its 2 cores shared by other jobs.
"""

from __future__ import annotations

import functools
import math

import numpy as np

STAGES = 3
SENSOR_KINDS = ("FIT{k}01", "FIT{k}02", "LIT{k}01", "PIT{k}01", "AIT{k}01", "TIT{k}01", "CUR{k}01", "VIB{k}01")
ACTUATOR_KINDS = ("P{k}01", "MV{k}01")
GLOBAL = ("PIT001", "AIT001", "P002")
COLUMNS = [name.format(k=k) for k in range(1, STAGES + 1) for name in SENSOR_KINDS + ACTUATOR_KINDS] + list(GLOBAL)
SENSORS = [c for c in COLUMNS if c[:3] in ("FIT", "LIT", "PIT", "AIT", "TIT", "CUR", "VIB")]
PUMPS = [f"P{k}01" for k in range(1, STAGES + 1)]
ACTUATORS = [f"P{k}01" for k in range(1, STAGES + 1)] + [f"MV{k}01" for k in range(1, STAGES + 1)]
ATTACK_KINDS = ("stuck", "spike", "drift", "actuator", "blockage", "bias", "noise")
NOISE = {"FIT": 0.02, "LIT": 0.3, "PIT": 0.03, "AIT": 0.01, "TIT": 0.05, "CUR": 0.04, "VIB": 0.03, "P": 0.0, "MV": 0.005}
DESIGN_FLOW = 2.5  # a pump vibrates least at this flow
# steps an attack lasts (low, high + 1); the faults real testbeds label (a closed valve, an offset
# sensor, cavitation) are sustained: they outlast a 64-step window, so some windows lie wholly inside
LENGTHS = {"spike": (1, 4), "blockage": (80, 201), "bias": (80, 201), "noise": (80, 201)}


def _smooth_noise(rng: np.random.Generator, n: int, scale: float, rho: float = 0.995) -> np.ndarray:
    """An AR(1) process with stationary standard deviation ``scale``."""
    e = rng.normal(0.0, scale * math.sqrt(1 - rho**2), n).tolist()
    out, acc = [0.0] * n, 0.0
    for i in range(n):  # a plain loop: importing scipy.signal for lfilter costs more than this
        acc = e[i] + rho * acc
        out[i] = acc
    return np.array(out)


def _schedule_attacks(rng: np.random.Generator, n: int, start: int, gap: tuple[int, int]) -> list[dict]:
    attacks, i, turn = [], start, 0
    while True:
        kind = ATTACK_KINDS[turn % len(ATTACK_KINDS)]
        turn += 1
        length = int(rng.integers(*LENGTHS.get(kind, (10, 41))))
        if i + length >= n - 10:
            return attacks
        targets = {"actuator": ACTUATORS, "blockage": PUMPS, "noise": PUMPS}.get(kind, SENSORS)
        attack = {"kind": kind, "target": str(rng.choice(targets)), "start": i, "stop": i + length,
                  "sign": float(rng.choice([-1, 1]))}
        if kind in ("blockage", "bias", "noise"):  # drawn here so the other kinds' draws stay as they were
            attack["size"] = float(rng.uniform(*{"blockage": (0.35, 0.6), "bias": (3, 5), "noise": (5, 8)}[kind]))
        attacks.append(attack)
        i += length + int(rng.integers(*gap))


def simulate(n: int, seed: int, attacks: bool = False, attack_gap: tuple[int, int] = (150, 330)):
    """Simulate ``n`` steps. Returns (values ``[n, D]`` float32, labels ``[n]`` int64, attack list).

    Results are cached per process (fresh copies are returned), so building the dataset
    again — as tests and the CLI do — costs nothing.
    """
    values, labels, schedule = _simulate(int(n), int(seed), bool(attacks), tuple(attack_gap))
    return values.copy(), labels.copy(), [dict(a) for a in schedule]


@functools.lru_cache(maxsize=16)
def _simulate(n: int, seed: int, attacks: bool, attack_gap: tuple[int, int]):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    phase = rng.uniform(0, 2 * math.pi, 4)
    supply = 2.0 + 0.25 * np.sin(2 * math.pi * t / 700 + phase[0]) + _smooth_noise(rng, n, 0.05)
    demand = 2.2 + 0.3 * np.sin(2 * math.pi * t / 480 + phase[1]) + _smooth_noise(rng, n, 0.03)
    raw_quality = 7.0 + 0.3 * np.sin(2 * math.pi * t / 900 + phase[2]) + _smooth_noise(rng, n, 0.05)
    ambient = 20.0 + 2.0 * np.sin(2 * math.pi * t / 1500 + phase[3])
    schedule = _schedule_attacks(rng, n, start=200, gap=attack_gap) if attacks else []

    force = {a: np.full(n, -1, dtype=np.int8) for a in ACTUATORS}
    for a in schedule:
        if a["kind"] == "actuator":
            force[a["target"]][a["start"] : a["stop"]] = 2  # 2: invert the controller's command
    blocked = [[1.0] * n for _ in range(3)]  # the fraction of a pump's flow that gets through
    pump_faults = {a["start"]: a for a in schedule if a["kind"] in ("blockage", "noise")}
    fp = [force[f"P{k}01"] for k in range(1, 4)]
    fv = [force[f"MV{k}01"] for k in range(1, 4)]

    level = [float(x) for x in rng.uniform(40, 60, 3)]
    conc = [7.0, 7.0, 7.0]
    temp = [20.0, 20.0, 20.0]
    pump = [0, 0, 0]
    valve_cmd = [1, 1, 1]
    valve = [1.0, 1.0, 1.0]
    dosing = 0
    out = [None] * n
    supply_l, demand_l, raw_l, ambient_l = supply.tolist(), demand.tolist(), raw_quality.tolist(), ambient.tolist()
    fp = [f.tolist() for f in fp]
    fv = [f.tolist() for f in fv]
    for i in range(n):
        # controllers (hysteresis on levels), then forced actuators
        if level[0] < 35:
            valve_cmd[0] = 1
        elif level[0] > 80:
            valve_cmd[0] = 0
        for k in (1, 2):
            if level[k] < 60:
                valve_cmd[k] = 1
            elif level[k] > 88:
                valve_cmd[k] = 0
        for k in (0, 1):
            if level[k] > 55 and valve[k + 1] > 0.5:
                pump[k] = 1
            elif level[k] < 25 or valve[k + 1] < 0.5:
                pump[k] = 0
        if level[2] > 70:
            pump[2] = 1
        elif level[2] < 45:
            pump[2] = 0
        if conc[0] > 7.25:
            dosing = 1
        elif conc[0] < 7.0:
            dosing = 0
        p_on = [(1 - pump[k]) if fp[k][i] == 2 else pump[k] for k in range(3)]
        v_cmd = [(1 - valve_cmd[k]) if fv[k][i] == 2 else valve_cmd[k] for k in range(3)]
        if i in pump_faults:  # a blockage or cavitation hits a running pump (the drawn one if it runs)
            a = pump_faults[i]
            running = [k for k in range(3) if p_on[k]]
            if running and not p_on[PUMPS.index(a["target"])]:
                a["target"] = PUMPS[running[0]]
            if a["kind"] == "blockage":
                blocked[PUMPS.index(a["target"])][a["start"] : a["stop"]] = [a["size"]] * (a["stop"] - a["start"])
        for k in range(3):  # valves move at a limited rate
            valve[k] += max(-0.2, min(0.2, v_cmd[k] - valve[k]))
        # flows
        inflow0 = valve[0] * 1.25 * math.sqrt(max(supply_l[i], 0.0))
        q = [0.0, 0.0, 0.0]
        for k in (0, 1):
            q[k] = p_on[k] * 2.4 * valve[k + 1] * (0.9 + 0.004 * level[k]) if level[k] > 1 else 0.0
        q[2] = p_on[2] * demand_l[i] * (0.9 + 0.004 * level[2]) if level[2] > 1 else 0.0
        q = [q[k] * blocked[k][i] for k in range(3)]
        inflow = [inflow0, q[0], q[1]]
        # a restriction downstream moves the pump along its curve: less flow, more head
        pressure = [p_on[k] * (3.0 - 0.6 * (q[k] / blocked[k][i]) ** 2 + 2.0 * (1 - blocked[k][i]))
                    + 0.01 * level[k] for k in range(3)]
        current = [p_on[k] * (1.0 + 0.9 * q[k]) for k in range(3)]
        vibration = [0.2 + p_on[k] * (0.8 + 0.6 * abs(q[k] - DESIGN_FLOW)) for k in range(3)]
        # states
        for k in range(3):
            level[k] = min(100.0, max(0.0, level[k] + 0.6 * (inflow[k] - q[k])))
        upstream = [raw_l[i], conc[0], conc[1]]
        for k in range(3):
            conc[k] += inflow[k] / (20.0 + 0.3 * level[k]) * (upstream[k] - conc[k])
        conc[0] -= 0.004 * dosing
        amb = ambient_l[i]
        t_up = [amb - 4.0, temp[0], temp[1]]
        for k in range(3):
            temp[k] += 0.002 * (amb - temp[k]) + inflow[k] / (40.0 + level[k]) * (t_up[k] - temp[k]) + 0.01 * p_on[k]
        row = []
        for k in range(3):
            row += [inflow[k], q[k], level[k], pressure[k], conc[k], temp[k], current[k], vibration[k], p_on[k], valve[k]]
        row += [supply_l[i], raw_l[i], dosing]
        out[i] = row
    out = np.array(out)

    # normal operation never fills a tank far enough for a controller to close a valve: a valve that is
    # not fully open is the attack's aftermath (an overfilled tank draining), still part of the anomaly
    valve_closed = (out[:, [COLUMNS.index(v) for v in ACTUATORS if v.startswith("MV")]] < 0.999).any(1)

    loud = np.ones((len(COLUMNS), n))  # cavitation multiplies a pump's vibration and current noise
    for a in schedule:
        if a["kind"] == "noise":
            k = a["target"][1]
            loud[COLUMNS.index(f"VIB{k}01"), a["start"] : a["stop"]] = a["size"]
            loud[COLUMNS.index(f"CUR{k}01"), a["start"] : a["stop"]] = 3.0
    for j, name in enumerate(COLUMNS):  # measurement noise
        kind = name.rstrip("0123456789")
        if NOISE[kind] > 0:
            out[:, j] += rng.normal(0.0, NOISE[kind], n) * loud[j]

    labels = np.zeros(n, dtype=np.int64)
    spread = out.std(0) + 1e-6
    for a in schedule:
        s, e = a["start"], a["stop"]
        settled = e
        while settled < n and valve_closed[settled]:
            settled += 1
        a["settled"] = settled
        labels[s:settled] = 1
        if a["kind"] not in ("stuck", "spike", "drift", "bias"):
            continue  # the physics or the noise carried it
        j = COLUMNS.index(a["target"])
        if a["kind"] == "stuck":
            out[s:e, j] = out[s, j]
        elif a["kind"] == "spike":
            out[s:e, j] += a["sign"] * rng.uniform(6, 10) * spread[j]
        elif a["kind"] == "drift":
            out[s:e, j] += a["sign"] * np.linspace(0, rng.uniform(4, 6), e - s) * spread[j]
        elif a["kind"] == "bias":
            out[s:e, j] += a["sign"] * a["size"] * spread[j]
    return out.astype(np.float32), labels, schedule

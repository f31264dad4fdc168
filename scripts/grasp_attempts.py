"""Grasp attempts in recorded episodes (`glue eval --record` or `glue record`): for each episode, how often the
commanded gripper closed (runs of closing commands), how many of those closings ended on nothing (the measured width
fell under 1 cm), and what the arm did after such a miss: opened again before the TCP moved 10 cm (reopened), or
carried the empty gripper 10 cm or more (ran on).

    .venv/bin/python scripts/grasp_attempts.py out/eval-retry/dart/episodes/*.arrow
"""

import sys

import pyarrow as pa

CLOSED = 0.04  # commanded width below this: a closing command (open is 0.08, closed 0.0)
EMPTY = 0.01  # measured width below this while closed: nothing between the fingers
RAN_ON = 0.10  # horizontal TCP travel with the empty gripper closed that counts as running on (m)


def closings(actions):
    """(first, last) tick of every run of consecutive closing commands."""
    runs, start = [], None
    for t, action in enumerate(actions):
        if action[7] < CLOSED and start is None:
            start = t
        elif action[7] >= CLOSED and start is not None:
            runs.append((start, t - 1))
            start = None
    if start is not None:
        runs.append((start, len(actions) - 1))
    return runs


def attempts(path):
    """Closings, missed closings, misses followed by a reopening, misses carried on empty, success."""
    table = pa.ipc.open_file(path).read_all()
    actions = table.column("action").to_pylist()
    states = table.column("robot_state").to_pylist()  # row t measured before action t: its width lags a tick
    runs = closings(actions)
    missed, reopened, ran_on = 0, 0, 0
    for first, last in runs:
        ticks = range(first + 1, min(last + 2, len(states)))
        empty = next((t for t in ticks if states[t][7] < EMPTY), None)
        if empty is None:
            continue
        missed += 1
        x, y = states[empty][8:10]
        travel = max(((states[t][8] - x) ** 2 + (states[t][9] - y) ** 2) ** 0.5 for t in range(empty, ticks[-1] + 1))
        if travel >= RAN_ON:
            ran_on += 1
        elif last + 1 < len(actions):
            reopened += 1
    success = table.schema.metadata.get(b"success") == b"true"
    return len(runs), missed, reopened, ran_on, success


def main(paths):
    if not paths:
        sys.exit(__doc__)
    totals = [0, 0, 0, 0]
    print("episode | closings | missed | reopened | ran on empty | success")
    for path in paths:
        row = attempts(path)
        totals = [a + b for a, b in zip(totals, row[:4])]
        print(f"{path.rsplit('/', 1)[-1]} | {row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]}")
    print(f"total | {totals[0]} | {totals[1]} | {totals[2]} | {totals[3]} |")


if __name__ == "__main__":
    main(sys.argv[1:])

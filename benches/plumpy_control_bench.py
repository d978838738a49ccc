"""plumpy 0.26.1 + kiwipy 0.9's side of benches/control.rs, on the same broker in the same run:
the baseline that the Rust control layer is compared with.

    python plumpy_control_bench.py <url> <slots> <rounds>

prints one JSON object: the median of each figure over the rounds (and every round):
- pause_play_us: one remote pause then play of a waiting process (a RemoteProcessThreadController
  in this process, a plumpy worker in another), the median of 200 pairs per round;
- launch_per_s_1 / launch_per_s_4: trivial processes launched through the task queue with
  nowait=False (outputs awaited), 1,000 with 100 in flight, on 1 and on 4 worker processes,
  given no communicator (plumpy's launcher's default);
- launch_listening_per_s_1 / _4: the same, each process given the worker's communicator (so
  reachable and broadcasting, as AiiDA's processes are).

The workers are tests/plumpy/peer.py in worker mode, each taking up to <slots> tasks at once.
"""

import json
import os
import statistics
import subprocess
import sys
import time
import uuid

import plumpy
from plumpy.futures import unwrap_kiwi_future

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, '..', 'tests', 'plumpy', 'peer.py')
sys.path.insert(0, os.path.dirname(PEER))
import peer  # noqa: E402  (the worker's process types, and `connect`)

PAIRS = 200
LAUNCHES = 1_000
IN_FLIGHT = 100


class Loader(plumpy.DefaultObjectLoader):
    def identify_object(self, obj):
        return f'{obj.__module__}:{obj.__name__}'


def named(name):
    cls = type(name, (), {})
    cls.__module__ = '__main__'
    return cls


def start_workers(url, prefix, count, slots):
    # plumpy's workers can leave a reply unsent until their loop wakes; a 1 ms timer wakes them
    # (see peer.py): plumpy at its best.
    os.environ['PEER_TICK_SECONDS'] = '0.001'
    workers = []
    for _ in range(count):
        worker = subprocess.Popen(
            [sys.executable, PEER, 'worker', url, prefix, str(slots)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert worker.stdout.readline().strip() == 'READY'
        workers.append(worker)
    return workers


def stop(workers):
    for worker in workers:
        worker.stdin.close()
    for worker in workers:
        worker.wait()


def result(future):
    return unwrap_kiwi_future(future).result(timeout=60)


def pause_play(url, slots):
    prefix = f'bench-{uuid.uuid4().hex}'
    workers = start_workers(url, prefix, 1, slots)
    comm = peer.connect(url, prefix)
    controller = plumpy.RemoteProcessThreadController(comm)
    pid = result(controller.launch_process(named('Waits'), init_kwargs={'inputs': {}}, nowait=True, loader=Loader()))
    # Wait until it waits (it answers status once subscribed).
    while result(controller.get_status(pid))['state'] != 'ProcessState.WAITING':
        time.sleep(0.01)
    times = []
    for _ in range(PAIRS):
        start = time.perf_counter()
        assert result(controller.pause_process(pid)) is True
        assert result(controller.play_process(pid)) is True
        times.append(time.perf_counter() - start)
    result(controller.kill_process(pid))
    comm.close()
    stop(workers)
    return statistics.median(times) * 1e6


def launches(url, slots, count, name):
    prefix = f'bench-{uuid.uuid4().hex}'
    workers = start_workers(url, prefix, count, slots)
    comm = peer.connect(url, prefix)
    controller = plumpy.RemoteProcessThreadController(comm)
    add = named(name)
    loader = Loader()

    def launch(i):
        return controller.launch_process(add, init_kwargs={'inputs': {'a': i, 'b': 1}}, loader=loader)

    for i in range(20):  # warm up
        result(launch(i))
    start = time.perf_counter()
    in_flight = []
    for i in range(LAUNCHES):
        if len(in_flight) >= IN_FLIGHT:
            assert result(in_flight.pop(0))['sum'] is not None
        in_flight.append(launch(i))
    for future in in_flight:
        result(future)
    elapsed = time.perf_counter() - start
    comm.close()
    stop(workers)
    return LAUNCHES / elapsed


def main():
    url, slots, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    figures = {
        'pause_play_us': [],
        'launch_per_s_1': [],
        'launch_per_s_4': [],
        'launch_listening_per_s_1': [],
        'launch_listening_per_s_4': [],
    }
    for _ in range(rounds):
        figures['pause_play_us'].append(pause_play(url, slots))
        for workers in (1, 4):
            figures[f'launch_per_s_{workers}'].append(launches(url, slots, workers, 'Add'))
            figures[f'launch_listening_per_s_{workers}'].append(
                launches(url, slots, workers, 'ListeningAdd')
            )
    out = {name: statistics.median(values) for name, values in figures.items()}
    out['rounds'] = figures
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
    main()

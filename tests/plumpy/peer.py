"""A plumpy 0.26 peer for the control layer's interoperability tests (tests/control_plumpy.rs).

    python peer.py worker <url> <prefix> [slots]
                                           a plumpy worker: a ProcessLauncher on the task queue
                                           <prefix>.processes, with a pickle persister, whose
                                           `Waits` processes get the communicator (as AiiDA's
                                           do); prints READY, stops when stdin closes
    python peer.py control <url> <prefix>  a plumpy controller against the Rust worker of
                                           tests/control_plumpy.rs; prints ALL OK, or fails

Names: exchanges <prefix>.messages and <prefix>.tasks, task queue <prefix>.processes, kiwipy's
testing mode (the declarations must match the Rust side's).
"""

import asyncio
import os
import sys
import tempfile
import threading
import uuid

import kiwipy
import plumpy
from kiwipy import rmq

TIMEOUT = 20


def connect(url, prefix, slots=0):
    return rmq.RmqThreadCommunicator.connect(
        connection_params={'url': url},
        message_exchange=f'{prefix}.messages',
        task_exchange=f'{prefix}.tasks',
        task_queue=f'{prefix}.processes',
        task_prefetch_count=slots,
        testing_mode=True,
    )


# ---- the worker --------------------------------------------------------------------------------

# The worker's communicator, wrapped for its loop: what `Waits` processes subscribe with.
LOOP_COMM = None


class Add(plumpy.Process):
    """Adds its inputs `a` and `b` into the output `sum`. Gets no communicator."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('a')
        spec.input('b')
        spec.output('sum')

    def run(self):
        self.out('sum', self.inputs['a'] + self.inputs['b'])


class ListeningAdd(Add):
    """Add, reachable over the communicator (as AiiDA's processes are)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('communicator', LOOP_COMM)
        super().__init__(*args, **kwargs)


class Waits(plumpy.Process):
    """Waits until killed; reachable over the communicator, as AiiDA's processes are."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('communicator', LOOP_COMM)
        super().__init__(*args, **kwargs)

    def run(self):
        return plumpy.Wait(msg='waiting to be steered')


def worker(url, prefix, slots='0'):
    global LOOP_COMM
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    comm = connect(url, prefix, int(slots))
    LOOP_COMM = plumpy.wrap_communicator(comm, loop)
    persister = plumpy.PicklePersister(tempfile.mkdtemp(prefix='plumpy-peer-'))
    launcher = plumpy.ProcessLauncher(loop=loop, persister=persister)
    LOOP_COMM.add_task_subscriber(launcher)

    # plumpy's loop communicator can queue a reply's callback without waking the loop
    # (reference notes 5.5): a short timer keeps an idle worker answering. The benchmark makes
    # it 1 ms, plumpy's best case.
    period = float(os.environ.get('PEER_TICK_SECONDS', '0.05'))

    def tick():
        loop.call_later(period, tick)

    loop.call_soon(tick)
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(loop.stop)), daemon=True).start()
    print('READY', flush=True)
    loop.run_forever()
    comm.close()


# ---- the controller ----------------------------------------------------------------------------


def rust_type(name):
    """A stand-in for a Rust process type, which the Rust launcher knows as tests.workflows:<name>."""
    cls = type(name, (), {})
    cls.__module__ = 'tests.workflows'
    return cls


class IdentifyOnly(plumpy.DefaultObjectLoader):
    """Names a stand-in class without importing it (it lives in Rust)."""

    def identify_object(self, obj):
        return f'{obj.__module__}:{obj.__name__}'


def result(future):
    """The final value of a kiwipy future, following futures of futures."""
    return plumpy.futures.unwrap_kiwi_future(future).result(timeout=TIMEOUT)


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def control(url, prefix):
    comm = connect(url, prefix)
    controller = plumpy.RemoteProcessThreadController(comm)
    loader = IdentifyOnly()
    heard = []
    heard_lock = threading.Condition()

    def on_state(_comm, _body, sender, subject, _correlation_id):
        with heard_lock:
            heard.append((str(sender), subject))
            heard_lock.notify_all()

    comm.add_broadcast_subscriber(kiwipy.BroadcastFilter(on_state, subject='state_changed.*'))

    def wait_for(pid, subject):
        with heard_lock:
            found = heard_lock.wait_for(lambda: (str(pid), subject) in heard, timeout=TIMEOUT)
        check(found, f'{pid} broadcast {subject} (heard {heard})')

    # Launch a Rust process and get its pid as a UUID, as from a plumpy worker.
    waits = rust_type('Waits')
    pid = result(controller.launch_process(waits, init_kwargs={'inputs': {}}, nowait=True, loader=loader))
    check(isinstance(pid, uuid.UUID), f'the pid is a UUID, not {pid!r}')
    wait_for(pid, 'state_changed.running.waiting')

    status = result(controller.get_status(pid))
    check(status['state'] == 'ProcessState.WAITING', status)
    check(status['paused'] is False, status)
    check(status['process_string'].startswith('<Waits>'), status)
    check(isinstance(status['ctime'], float), status)

    check(result(controller.pause_process(pid, 'lunch')) is True, 'pause answers True')
    check(result(controller.get_status(pid))['paused'] is True, 'paused')
    check(result(controller.play_process(pid)) is True, 'play answers True')
    check(result(controller.get_status(pid))['paused'] is False, 'played')

    # The asynchronous controller awaits twice for pause/play/kill, once for status.
    async def steer_async():
        async_controller = plumpy.RemoteProcessController(comm)
        check(await async_controller.pause_process(pid) is True, 'async pause')
        check(await async_controller.play_process(pid) is True, 'async play')
        check((await async_controller.get_status(pid))['paused'] is False, 'async status')

    asyncio.run(steer_async())

    try:
        result(comm.rpc_send(str(pid), {'intent': 'dance'}))
        check(False, 'an unknown intent fails')
    except kiwipy.RemoteException as error:
        check('Unknown intent' in str(error), error)

    check(result(controller.kill_process(pid, 'from python')) is True, 'kill answers True')
    wait_for(pid, 'state_changed.waiting.killed')
    with heard_lock:
        mine = [subject for sender, subject in heard if sender == str(pid)]
    check(
        mine
        == [
            'state_changed.None.created',
            'state_changed.created.running',
            'state_changed.running.waiting',
            'state_changed.waiting.killed',
        ],
        mine,
    )
    try:
        result(controller.get_status(pid))
        check(False, 'an ended process is unroutable')
    except kiwipy.UnroutableError:
        pass

    # pause_all / play_all / kill_all reach a Rust process.
    pid = result(controller.launch_process(waits, init_kwargs={'inputs': {}}, nowait=True, loader=loader))
    wait_for(pid, 'state_changed.running.waiting')
    controller.kill_all('everyone')
    wait_for(pid, 'state_changed.waiting.killed')

    # Launch and continue tasks for a Rust type, answered with the outputs.
    add = rust_type('Add')
    outputs = result(controller.launch_process(add, init_kwargs={'inputs': {'a': 1, 'b': 2}}, loader=loader))
    check(outputs == {'sum': 3}, outputs)
    # What execute_process does, in two requests: plumpy 0.26.1's thread controller sends the
    # continue from the communicator's own thread and times out (against plumpy's own worker too).
    body = plumpy.process_comms.create_create_body(add, init_kwargs={'inputs': {'a': 20, 'b': 22}}, persist=True, loader=loader)
    pid = result(controller.task_send(body))
    check(isinstance(pid, uuid.UUID), pid)
    outputs = result(controller.continue_process(pid))
    check(outputs == {'sum': 42}, outputs)
    created = result(controller.launch_process(add, init_kwargs={'inputs': {'a': 2, 'b': 3}}, persist=True, nowait=True, loader=loader))
    check(isinstance(created, uuid.UUID), created)
    try:
        result(controller.launch_process(rust_type('Nothing'), init_kwargs={'inputs': {}}, loader=loader))
        check(False, 'an unknown type fails')
    except kiwipy.RemoteException as error:
        check('tests.workflows:Nothing' in str(error), error)

    comm.close()
    print('ALL OK', flush=True)


if __name__ == '__main__':
    mode, url, prefix, *rest = sys.argv[1:]
    {'worker': worker, 'control': control}[mode](url, prefix, *rest)

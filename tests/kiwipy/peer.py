"""A kiwipy peer for the interoperability tests of runtime-thread's RabbitMQ transport.

    python peer.py serve <url> <prefix>    kiwipy subscribers for a Rust client; prints READY,
                                           stops when stdin closes
    python peer.py client <url> <prefix>   a kiwipy client against the Rust subscribers of
                                           tests/amqp_kiwipy.rs; prints ALL OK, or fails

Names: exchanges <prefix>.messages and <prefix>.tasks, task queues <prefix>.<name>, testing mode
on both sides (the declarations must match).
"""

import concurrent.futures
import sys
import threading
import time

import kiwipy
from kiwipy import rmq

# Every JSON type, nesting, unicode (including a line separator), numbers near the edges.
VALUES = [
    None, True, False, 0, -7, 2**53, 1.5, 1e100, -2.5e-10, '', 'text',
    'unicode \u00fcn\u00efc\u00f8d\u00e9 \U0001F600 \u2028 end', [], [1, 'a', None, 2.0],
    {}, {'nested': {'deep': [1, {'x': 'y'}], 'empty': {}}}, 'x' * 300_000,
]


def connect(url, prefix, queue):
    return rmq.RmqThreadCommunicator.connect(
        connection_params={'url': url},
        message_exchange=f'{prefix}.messages',
        task_exchange=f'{prefix}.tasks',
        task_queue=f'{prefix}.{queue}',
        testing_mode=True,
    )


def serve(url, prefix):
    comm = connect(url, prefix, 'py-tasks')
    lock = threading.Lock()
    heard = []
    no_reply = []

    def echo(_comm, msg):
        return msg

    def fail(_comm, _msg):
        raise RuntimeError('boom from python')

    def nested(_comm, msg):
        outer, inner = kiwipy.Future(), kiwipy.Future()
        outer.set_result(inner)
        threading.Timer(0.05, lambda: inner.set_result({'deep': msg})).start()
        return outer

    def on_task(_comm, task):
        if task == 'fail':
            raise RuntimeError('task failed in python')
        if task == 'later':
            answer = kiwipy.Future()
            threading.Timer(0.05, lambda: answer.set_result('done later in python')).start()
            return answer
        if isinstance(task, dict) and 'noreply' in task:
            with lock:
                no_reply.append(task['noreply'])
            return None
        if isinstance(task, int) and not isinstance(task, bool):
            return task * 2
        return task

    def on_broadcast(_comm, body, sender, subject, correlation_id):
        with lock:
            heard.append([body, sender, subject, correlation_id])

    def get_heard(_comm, _msg):
        with lock:
            return list(heard)

    def get_no_reply(_comm, _msg):
        with lock:
            return list(no_reply)

    comm.add_rpc_subscriber(echo, 'py-echo')
    comm.add_rpc_subscriber(fail, 'py-fail')
    comm.add_rpc_subscriber(nested, 'py-nested')
    comm.add_rpc_subscriber(get_heard, 'py-heard')
    comm.add_rpc_subscriber(get_no_reply, 'py-no-reply')
    comm.add_task_subscriber(on_task)
    comm.add_broadcast_subscriber(on_broadcast)
    print('READY', flush=True)
    sys.stdin.read()
    comm.close()


def wait_for(condition, what, seconds=10):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f'timed out waiting for {what}')


def client(url, prefix):
    comm = connect(url, prefix, 'py-client-tasks')
    try:
        for value in VALUES:
            got = comm.rpc_send('rs-echo', value).result(10)
            assert got == value, f'echo of {value!r:.80} came back as {got!r:.80}'
            assert type(got) is type(value), f'{value!r:.80}: {type(got)} is not {type(value)}'
        print('ok rpc values', flush=True)

        try:
            comm.rpc_send('rs-fail', 1).result(10)
            raise AssertionError('rs-fail did not fail')
        except kiwipy.RemoteException as error:
            assert 'boom from rust' in str(error), str(error)
        print('ok rpc remote error', flush=True)

        answer, levels = comm.rpc_send('rs-nested', 'q').result(10), 0
        while isinstance(answer, concurrent.futures.Future):
            answer, levels = answer.result(10), levels + 1
        assert answer == {'deep': 'q'} and levels == 2, (answer, levels)
        print('ok rpc nested pending', flush=True)

        try:
            comm.rpc_send('nobody-here', 1)
            raise AssertionError('an RPC to nobody was routed')
        except kiwipy.UnroutableError:
            pass
        print('ok rpc unroutable', flush=True)

        tasks = comm.task_queue(f'{prefix}.rs-tasks')
        assert tasks.task_send(21).result(10) == 42
        try:
            tasks.task_send('fail').result(10)
            raise AssertionError('the failing task did not fail')
        except kiwipy.RemoteException as error:
            assert 'task failed in rust' in str(error), str(error)
        answer, levels = tasks.task_send('later').result(10), 0
        while isinstance(answer, concurrent.futures.Future):
            answer, levels = answer.result(10), levels + 1
        assert answer == 'done later in rust' and levels == 1, (answer, levels)
        assert tasks.task_send({'noreply': 'py-1'}, no_reply=True) is None
        wait_for(lambda: 'py-1' in comm.rpc_send('rs-no-reply', None).result(10), 'the no-reply task')
        print('ok tasks', flush=True)

        comm.broadcast_send({'k': 'v'}, sender='py.sender', subject='py.subject',
                            correlation_id='cid-7')
        heard = wait_for(lambda: comm.rpc_send('rs-heard', None).result(10), 'the broadcast')
        assert heard == [[{'k': 'v'}, 'py.sender', 'py.subject', 'cid-7']], heard
        print('ok broadcast', flush=True)
    finally:
        comm.close()
    print('ALL OK', flush=True)


if __name__ == '__main__':
    mode, url, prefix = sys.argv[1:4]
    {'serve': serve, 'client': client}[mode](url, prefix)

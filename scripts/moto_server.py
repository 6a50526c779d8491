#!/usr/bin/env python3
"""moto's server, with every request handled atomically.

DynamoDB applies each conditional write atomically: of two writers conditioned on
the same version, exactly one wins. moto's stock server handles requests on
parallel threads with no lock around a table, so under load its check and its
write can interleave and both writers "win". The tests prove single-spend races,
so they need DynamoDB's guarantee; this wrapper gives it by running one request
at a time (connections are still accepted in parallel).

Usage: moto_server.py PORT  (binds 127.0.0.1 only)
"""
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

moto_app = DomainDispatcherApplication(create_backend_app)
one_at_a_time = threading.Lock()


def atomic_app(environ, start_response):
    with one_at_a_time:
        # Materialise the body inside the lock: the request is done when it returns.
        return list(moto_app(environ, start_response))


if __name__ == "__main__":
    run_simple(
        "127.0.0.1",
        int(sys.argv[1]),
        atomic_app,
        threaded=True,
        request_handler=MotoRequestHandler,
    )

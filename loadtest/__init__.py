"""Load and fault harness for authmw under real servers (gunicorn, uvicorn) and a real Keystone.

- :mod:`loadtest.apps`: the WSGI/ASGI apps the servers run, configured by a JSON file;
- :mod:`loadtest.servers`: start/stop gunicorn (threads) and uvicorn, sample their resources;
- :mod:`loadtest.proxy`: a TCP proxy on loopback that can delay, refuse or hang;
- :mod:`loadtest.gen`: the load generator, run as a separate process;
- :mod:`loadtest.harness`: the phases (normal, Keystone down, slow, Redis down) and their figures;
- :mod:`loadtest.report`: runs the harness and writes ``docs/reliability.md``.

Run ``python -m loadtest.report`` (``--long`` for the soak).
"""

"""The data plane: an HTTP/1.1 and TCP proxy on asyncio + uvloop.

Layout (each module opens with its own rule):

* ``plan``     the seam: what the engine asks per request (``Decider``,
               ``Plan``, ``Cluster``) and the types it acts on;
* ``static``   standalone mode's decisions (fixed upstreams, LB, Istio's
               default retries);
* ``observe``  the telemetry seam: what the engine reports per request
               and per TCP connection (``Observer``);
* ``http``     one client connection: parse, plan, forward, answer;
* ``attempts`` endpoint picks, fault delay, mirror, retries;
* ``local``    connection state, local replies, refusals, timeouts;
* ``mirror``   the fire-and-forget copy of a mirrored request;
* ``response`` where an upstream's response ends (framing only);
* ``heads``    hop-by-hop and plan edits on heads, local replies;
* ``upstream`` upstream connections and keep-alive pools;
* ``tcp``      byte splicing for non-HTTP ports;
* ``server``   listeners, the timeout sweep, the access log, workers.

Importing this package imports none of them, so the CLI stays light.
"""

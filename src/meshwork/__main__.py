"""``python -m meshwork``: the same as the ``meshwork`` command.

A node agent's spare proxy (``agent.standby``) runs this with ``MESHWORK_STANDBY``
set: it imports the proxy first, then waits for the pod it will serve, whose
environment it takes before the command line is read.
"""

import os

if __name__ == "__main__":
    if os.environ.get("MESHWORK_STANDBY"):
        from meshwork.cli.sidecar import standby

        standby(os.environ["MESHWORK_STANDBY"])
    from meshwork.cli import main

    main()

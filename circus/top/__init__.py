"""circus-top: a live view of circusd's watchers and processes.

* ``model``: what is shown (watchers, processes, sorting, the filter, the text of
  ``--once``), with no terminal code;
* ``feed``: the connections to circusd-stats' channel and to circusd;
* ``app``: the Textual view (the ``top`` extra).

A client only: nothing here imports the arbiter. The command is ``circus/cli/top.py``;
the user's guide is docs/top.md.
"""

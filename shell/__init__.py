"""The application shell: the ``medroute`` command, ``up``, the senders, samples and the local broker harness.

It sits on top of the listeners, the pipeline and the tools, and nothing below imports it.
"""
